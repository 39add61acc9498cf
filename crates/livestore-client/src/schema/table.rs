//! State tables: typed columns, defaults, nullability, primary keys and indexes, and their DDL.
//!
//! Tables are ordinary rowid tables (the undo log in [`crate::db::undo`] addresses rows by rowid). Column types are
//! written as declared types that keep SQLite's affinity right *and* tell the row reader how to decode values:
//! `BOOLEAN INTEGER`, `JSON TEXT`, `DATETIME TEXT`, `DATETIME_MS INTEGER`.

use crate::value::SqlValue;

/// The type of a state column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit integer.
    Integer,
    /// Double.
    Real,
    /// Stored as 0/1, read back as a JSON boolean.
    Boolean,
    /// JSON stored as text, read back as a JSON value.
    Json,
    /// A date stored as ISO-8601 text (`State.SQLite.datetime`).
    DateIso,
    /// A date stored as epoch milliseconds (`State.SQLite.datetimeInteger`, `Schema.DateFromNumber`).
    DateMs,
    /// Bytes.
    Blob,
}

impl ColumnType {
    /// The declared SQL type used in `CREATE TABLE`.
    pub fn decl_type(self) -> &'static str {
        match self {
            ColumnType::Text => "TEXT",
            ColumnType::Integer => "INTEGER",
            ColumnType::Real => "REAL",
            ColumnType::Boolean => "BOOLEAN INTEGER",
            ColumnType::Json => "JSON TEXT",
            ColumnType::DateIso => "DATETIME TEXT",
            ColumnType::DateMs => "DATETIME_MS INTEGER",
            ColumnType::Blob => "BLOB",
        }
    }
}

/// One column of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub(crate) name: String,
    pub(crate) column_type: ColumnType,
    pub(crate) nullable: bool,
    pub(crate) primary_key: bool,
    pub(crate) default: Option<SqlValue>,
}

impl Column {
    /// A column of the given type; not null, no default.
    pub fn new(name: impl Into<String>, column_type: ColumnType) -> Self {
        Column {
            name: name.into(),
            column_type,
            nullable: false,
            primary_key: false,
            default: None,
        }
    }

    /// A text column.
    pub fn text(name: impl Into<String>) -> Self {
        Column::new(name, ColumnType::Text)
    }

    /// An integer column.
    pub fn integer(name: impl Into<String>) -> Self {
        Column::new(name, ColumnType::Integer)
    }

    /// A real column.
    pub fn real(name: impl Into<String>) -> Self {
        Column::new(name, ColumnType::Real)
    }

    /// A boolean column.
    pub fn boolean(name: impl Into<String>) -> Self {
        Column::new(name, ColumnType::Boolean)
    }

    /// A JSON column.
    pub fn json(name: impl Into<String>) -> Self {
        Column::new(name, ColumnType::Json)
    }

    /// A date column stored as ISO text.
    pub fn date_iso(name: impl Into<String>) -> Self {
        Column::new(name, ColumnType::DateIso)
    }

    /// A date column stored as epoch milliseconds.
    pub fn date_ms(name: impl Into<String>) -> Self {
        Column::new(name, ColumnType::DateMs)
    }

    /// A blob column.
    pub fn blob(name: impl Into<String>) -> Self {
        Column::new(name, ColumnType::Blob)
    }

    /// Allows `NULL`.
    pub fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }

    /// Makes the column (part of) the primary key.
    pub fn primary_key(mut self) -> Self {
        self.primary_key = true;
        self
    }

    /// The value used when an insert omits the column.
    pub fn default_value(mut self, value: impl Into<SqlValue>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column's type.
    pub fn column_type(&self) -> ColumnType {
        self.column_type
    }
}

/// An index on a [`Table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub(crate) name: String,
    pub(crate) columns: Vec<String>,
    pub(crate) unique: bool,
}

impl Index {
    /// A non-unique index over the given columns.
    pub fn new(
        name: impl Into<String>,
        columns: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Index {
            name: name.into(),
            columns: columns.into_iter().map(Into::into).collect(),
            unique: false,
        }
    }

    /// Makes the index unique.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
}

/// A state table definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub(crate) name: String,
    pub(crate) columns: Vec<Column>,
    pub(crate) indexes: Vec<Index>,
}

impl Table {
    /// An empty table definition; add columns with [`Table::column`].
    pub fn new(name: impl Into<String>) -> Self {
        Table { name: name.into(), columns: Vec::new(), indexes: Vec::new() }
    }

    /// Adds a column.
    pub fn column(mut self, column: Column) -> Self {
        self.columns.push(column);
        self
    }

    /// Adds an index.
    pub fn index(mut self, index: Index) -> Self {
        self.indexes.push(index);
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The columns in declaration order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// `CREATE TABLE` and `CREATE INDEX` statements for the given schema name (`state`).
    pub(crate) fn ddl(&self, schema_name: &str) -> Vec<String> {
        let mut definitions: Vec<String> = self
            .columns
            .iter()
            .map(|column| {
                let mut definition =
                    format!("{} {}", quote_ident(&column.name), column.column_type.decl_type());
                if !column.nullable {
                    definition.push_str(" NOT NULL");
                }
                if let Some(default) = &column.default {
                    definition.push_str(" DEFAULT ");
                    definition.push_str(&sql_literal(default));
                }
                definition
            })
            .collect();
        let primary_key: Vec<String> = self
            .columns
            .iter()
            .filter(|column| column.primary_key)
            .map(|column| quote_ident(&column.name))
            .collect();
        if !primary_key.is_empty() {
            definitions.push(format!("PRIMARY KEY ({})", primary_key.join(", ")));
        }
        let mut statements = vec![format!(
            "CREATE TABLE IF NOT EXISTS {schema_name}.{} ({})",
            quote_ident(&self.name),
            definitions.join(", ")
        )];
        for index in &self.indexes {
            let columns: Vec<String> =
                index.columns.iter().map(|column| quote_ident(column)).collect();
            statements.push(format!(
                "CREATE {}INDEX IF NOT EXISTS {schema_name}.{} ON {} ({})",
                if index.unique { "UNIQUE " } else { "" },
                quote_ident(&index.name),
                quote_ident(&self.name),
                columns.join(", ")
            ));
        }
        statements
    }
}

/// Quotes an SQL identifier (`"name"`, doubling embedded quotes).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Writes a value as an SQL literal (for `DEFAULT` clauses, which cannot take bound parameters).
pub(crate) fn sql_literal(value: &SqlValue) -> String {
    match value {
        SqlValue::Null => "NULL".to_owned(),
        SqlValue::Integer(number) => number.to_string(),
        SqlValue::Real(number) if number.is_finite() => format!("{number:?}"),
        SqlValue::Real(_) => "NULL".to_owned(),
        SqlValue::Text(text) => format!("'{}'", text.replace('\'', "''")),
        SqlValue::Blob(bytes) => {
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("X'{hex}'")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn todo_table_ddl() {
        let todos = Table::new("todos")
            .column(Column::text("id").primary_key())
            .column(Column::text("text").default_value(""))
            .column(Column::boolean("completed").default_value(false))
            .column(Column::date_ms("deletedAt").nullable())
            .index(Index::new("todos_completed", ["completed"]));
        let ddl = todos.ddl("state");
        assert_eq!(
            ddl[0],
            "CREATE TABLE IF NOT EXISTS state.\"todos\" (\"id\" TEXT NOT NULL, \"text\" TEXT NOT NULL DEFAULT '', \
             \"completed\" BOOLEAN INTEGER NOT NULL DEFAULT 0, \"deletedAt\" DATETIME_MS INTEGER, PRIMARY KEY (\"id\"))"
        );
        assert_eq!(
            ddl[1],
            "CREATE INDEX IF NOT EXISTS state.\"todos_completed\" ON \"todos\" (\"completed\")"
        );
    }
}
