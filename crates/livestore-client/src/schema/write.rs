//! What materializers return and what queries send: SQL with bound parameters, built by small typed builders.
//!
//! [`Write`] covers insert, update, delete and upsert plus raw SQL; [`Query`] covers `SELECT` with equality
//! filters, ordering and limits plus raw SQL. Both compile to text and parameters at the call site; values are
//! never spliced into SQL text.

use crate::schema::table::quote_ident;
use crate::value::SqlValue;

/// A comparison in a `WHERE` clause.
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    column: String,
    operator: &'static str,
    value: Option<SqlValue>,
}

/// What an insert does when the primary key already exists.
#[derive(Debug, Clone, PartialEq)]
enum OnConflict {
    Abort,
    Ignore,
    Replace,
    /// `ON CONFLICT (keys) DO UPDATE SET` every non-key inserted column.
    Update(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum WriteKind {
    Insert { on_conflict: OnConflict },
    Update,
    Delete,
    Raw { sql: String, params: Vec<SqlValue> },
}

/// One write a materializer asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    table: String,
    kind: WriteKind,
    values: Vec<(String, SqlValue)>,
    filters: Vec<Filter>,
}

impl Write {
    fn new(table: impl Into<String>, kind: WriteKind) -> Self {
        Write { table: table.into(), kind, values: Vec::new(), filters: Vec::new() }
    }

    /// `INSERT INTO table (...) VALUES (...)`; fails on a duplicate key unless told otherwise.
    pub fn insert(table: impl Into<String>) -> Self {
        Write::new(table, WriteKind::Insert { on_conflict: OnConflict::Abort })
    }

    /// `INSERT ... ON CONFLICT (keys) DO UPDATE SET` the other given columns.
    pub fn upsert(
        table: impl Into<String>,
        keys: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let keys = keys.into_iter().map(Into::into).collect();
        Write::new(table, WriteKind::Insert { on_conflict: OnConflict::Update(keys) })
    }

    /// `UPDATE table SET ... WHERE ...`.
    pub fn update(table: impl Into<String>) -> Self {
        Write::new(table, WriteKind::Update)
    }

    /// `DELETE FROM table WHERE ...`.
    pub fn delete(table: impl Into<String>) -> Self {
        Write::new(table, WriteKind::Delete)
    }

    /// Raw SQL with positional (`?`) parameters.
    pub fn raw(sql: impl Into<String>, params: impl IntoIterator<Item = SqlValue>) -> Self {
        Write::new(
            String::new(),
            WriteKind::Raw { sql: sql.into(), params: params.into_iter().collect() },
        )
    }

    /// Sets a column (insert value or update assignment).
    pub fn set(mut self, column: impl Into<String>, value: impl Into<SqlValue>) -> Self {
        self.values.push((column.into(), value.into()));
        self
    }

    /// Adds `column = value` to the `WHERE` clause (`IS NULL` for a null value).
    pub fn where_eq(self, column: impl Into<String>, value: impl Into<SqlValue>) -> Self {
        self.where_op(column, "=", value)
    }

    /// Adds `column <op> value` (`=`, `!=`, `<`, `<=`, `>`, `>=`, `LIKE`) to the `WHERE` clause.
    pub fn where_op(
        mut self,
        column: impl Into<String>,
        operator: &'static str,
        value: impl Into<SqlValue>,
    ) -> Self {
        self.filters.push(make_filter(column.into(), operator, value.into()));
        self
    }

    /// On a duplicate key, keep the existing row.
    pub fn on_conflict_ignore(mut self) -> Self {
        self.kind = WriteKind::Insert { on_conflict: OnConflict::Ignore };
        self
    }

    /// On a duplicate key, replace the existing row.
    pub fn on_conflict_replace(mut self) -> Self {
        self.kind = WriteKind::Insert { on_conflict: OnConflict::Replace };
        self
    }

    /// The SQL text and its parameters.
    pub fn compile(&self) -> (String, Vec<SqlValue>) {
        let mut sql = String::new();
        self.write_sql(&mut sql);
        (sql, self.params().cloned().collect())
    }

    /// Appends the SQL text to `sql`. The store calls this for every materialized write, so it builds the text
    /// in place instead of through intermediate strings; the text is the prepared-statement cache key.
    pub(crate) fn write_sql(&self, sql: &mut String) {
        match &self.kind {
            WriteKind::Raw { sql: raw, .. } => sql.push_str(raw),
            WriteKind::Insert { on_conflict } => {
                sql.push_str(match on_conflict {
                    OnConflict::Ignore => "INSERT OR IGNORE INTO ",
                    OnConflict::Replace => "INSERT OR REPLACE INTO ",
                    OnConflict::Abort | OnConflict::Update(_) => "INSERT INTO ",
                });
                push_ident(sql, &self.table);
                if self.values.is_empty() {
                    sql.push_str(" DEFAULT VALUES");
                } else {
                    sql.push_str(" (");
                    for (idx, (column, _)) in self.values.iter().enumerate() {
                        if idx > 0 {
                            sql.push_str(", ");
                        }
                        push_ident(sql, column);
                    }
                    sql.push_str(") VALUES (");
                    for idx in 0..self.values.len() {
                        sql.push_str(if idx == 0 { "?" } else { ", ?" });
                    }
                    sql.push(')');
                }
                if let OnConflict::Update(keys) = on_conflict {
                    sql.push_str(" ON CONFLICT (");
                    for (idx, key) in keys.iter().enumerate() {
                        if idx > 0 {
                            sql.push_str(", ");
                        }
                        push_ident(sql, key);
                    }
                    let mut updates =
                        self.values.iter().filter(|(column, _)| !keys.contains(column)).peekable();
                    if updates.peek().is_none() {
                        sql.push_str(") DO NOTHING");
                    } else {
                        sql.push_str(") DO UPDATE SET ");
                        for (idx, (column, _)) in updates.enumerate() {
                            if idx > 0 {
                                sql.push_str(", ");
                            }
                            push_ident(sql, column);
                            sql.push_str(" = excluded.");
                            push_ident(sql, column);
                        }
                    }
                }
            }
            WriteKind::Update => {
                sql.push_str("UPDATE ");
                push_ident(sql, &self.table);
                sql.push_str(" SET ");
                for (idx, (column, _)) in self.values.iter().enumerate() {
                    if idx > 0 {
                        sql.push_str(", ");
                    }
                    push_ident(sql, column);
                    sql.push_str(" = ?");
                }
                push_where(sql, &self.filters);
            }
            WriteKind::Delete => {
                sql.push_str("DELETE FROM ");
                push_ident(sql, &self.table);
                push_where(sql, &self.filters);
            }
        }
    }

    /// The bound parameters, in placeholder order (borrowed: text values are not copied).
    pub(crate) fn params(&self) -> impl Iterator<Item = &SqlValue> {
        let raw = match &self.kind {
            WriteKind::Raw { params, .. } => params.as_slice(),
            _ => &[],
        };
        let values = match &self.kind {
            WriteKind::Insert { .. } | WriteKind::Update => self.values.as_slice(),
            WriteKind::Delete | WriteKind::Raw { .. } => &[],
        };
        let filters = match &self.kind {
            WriteKind::Update | WriteKind::Delete => self.filters.as_slice(),
            WriteKind::Insert { .. } | WriteKind::Raw { .. } => &[],
        };
        raw.iter()
            .chain(values.iter().map(|(_, value)| value))
            .chain(filters.iter().filter_map(filter_param))
    }
}

/// A read: SQL with parameters, built from a typed `SELECT` builder or given raw.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    table: Option<String>,
    raw: Option<(String, Vec<SqlValue>)>,
    columns: Vec<String>,
    filters: Vec<Filter>,
    order_by: Vec<(String, bool)>,
    limit: Option<u64>,
}

impl Query {
    /// `SELECT * FROM table`, refined with the builder methods.
    pub fn select(table: impl Into<String>) -> Self {
        Query {
            table: Some(table.into()),
            raw: None,
            columns: vec![],
            filters: vec![],
            order_by: vec![],
            limit: None,
        }
    }

    /// Raw SQL with positional parameters.
    pub fn sql(sql: impl Into<String>, params: impl IntoIterator<Item = SqlValue>) -> Self {
        Query {
            table: None,
            raw: Some((sql.into(), params.into_iter().collect())),
            columns: vec![],
            filters: vec![],
            order_by: vec![],
            limit: None,
        }
    }

    /// Restricts the selected columns.
    pub fn columns(mut self, columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `column = value` (`IS NULL` for a null value).
    pub fn where_eq(self, column: impl Into<String>, value: impl Into<SqlValue>) -> Self {
        self.where_op(column, "=", value)
    }

    /// Adds `column <op> value`.
    pub fn where_op(
        mut self,
        column: impl Into<String>,
        operator: &'static str,
        value: impl Into<SqlValue>,
    ) -> Self {
        self.filters.push(make_filter(column.into(), operator, value.into()));
        self
    }

    /// Orders by a column, ascending.
    pub fn order_by(mut self, column: impl Into<String>) -> Self {
        self.order_by.push((column.into(), true));
        self
    }

    /// Orders by a column, descending.
    pub fn order_by_desc(mut self, column: impl Into<String>) -> Self {
        self.order_by.push((column.into(), false));
        self
    }

    /// Returns at most `limit` rows.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The SQL text and its parameters.
    pub fn compile(&self) -> (String, Vec<SqlValue>) {
        if let Some((sql, params)) = &self.raw {
            return (sql.clone(), params.clone());
        }
        let table = quote_ident(self.table.as_deref().unwrap_or_default());
        let columns = if self.columns.is_empty() {
            "*".to_owned()
        } else {
            self.columns.iter().map(|column| quote_ident(column)).collect::<Vec<_>>().join(", ")
        };
        let mut sql = format!("SELECT {columns} FROM {table}");
        push_where(&mut sql, &self.filters);
        let params = self.filters.iter().filter_map(filter_param).cloned().collect();
        if !self.order_by.is_empty() {
            let order: Vec<String> = self
                .order_by
                .iter()
                .map(|(column, ascending)| {
                    format!("{} {}", quote_ident(column), if *ascending { "ASC" } else { "DESC" })
                })
                .collect();
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        (sql, params)
    }
}

fn make_filter(column: String, operator: &'static str, value: SqlValue) -> Filter {
    const OPERATORS: [&str; 7] = ["=", "!=", "<", "<=", ">", ">=", "LIKE"];
    // An unknown operator would be spliced into SQL text; fall back to equality instead of trusting it.
    let operator =
        OPERATORS.into_iter().find(|known| known.eq_ignore_ascii_case(operator)).unwrap_or("=");
    Filter { column, operator, value: Some(value) }
}

/// Appends a `WHERE` clause; null comparisons become `IS [NOT] NULL` and take no parameter.
fn push_where(sql: &mut String, filters: &[Filter]) {
    for (idx, filter) in filters.iter().enumerate() {
        sql.push_str(if idx == 0 { " WHERE " } else { " AND " });
        push_ident(sql, &filter.column);
        match (&filter.value, filter.operator) {
            (Some(SqlValue::Null) | None, "=") => sql.push_str(" IS NULL"),
            (Some(SqlValue::Null) | None, "!=") => sql.push_str(" IS NOT NULL"),
            (Some(_), operator) => {
                sql.push(' ');
                sql.push_str(operator);
                sql.push_str(" ?");
            }
            (None, operator) => {
                sql.push(' ');
                sql.push_str(operator);
                sql.push_str(" NULL");
            }
        }
    }
}

/// The parameter a filter binds, if any (see [`push_where`]).
fn filter_param(filter: &Filter) -> Option<&SqlValue> {
    match (&filter.value, filter.operator) {
        (Some(SqlValue::Null) | None, "=" | "!=") | (None, _) => None,
        (Some(value), _) => Some(value),
    }
}

/// Appends a double-quoted identifier.
fn push_ident(sql: &mut String, name: &str) {
    sql.push('"');
    if name.contains('"') {
        sql.push_str(&name.replace('"', "\"\""));
    } else {
        sql.push_str(name);
    }
    sql.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_compile_to_bound_sql() {
        let (sql, params) =
            Write::insert("todos").set("id", "t1").set("completed", false).compile();
        assert_eq!(sql, r#"INSERT INTO "todos" ("id", "completed") VALUES (?, ?)"#);
        assert_eq!(params, vec![SqlValue::from("t1"), SqlValue::Integer(0)]);
        let (sql, params) =
            Write::update("todos").set("completed", true).where_eq("id", "t1").compile();
        assert_eq!(sql, r#"UPDATE "todos" SET "completed" = ? WHERE "id" = ?"#);
        assert_eq!(params.len(), 2);
        let (sql, _) = Write::delete("todos").where_eq("deletedAt", None::<i64>).compile();
        assert_eq!(sql, r#"DELETE FROM "todos" WHERE "deletedAt" IS NULL"#);
        let (sql, _) = Write::upsert("kv", ["k"]).set("k", "a").set("v", 1).compile();
        assert_eq!(
            sql,
            r#"INSERT INTO "kv" ("k", "v") VALUES (?, ?) ON CONFLICT ("k") DO UPDATE SET "v" = excluded."v""#
        );
        let (sql, _) =
            Query::select("todos").where_op("id", ">", "a").order_by("id").limit(3).compile();
        assert_eq!(sql, r#"SELECT * FROM "todos" WHERE "id" > ? ORDER BY "id" ASC LIMIT 3"#);
        let (sql, _) = Query::select("t").where_op("x", "; DROP TABLE t", 1).compile();
        assert_eq!(sql, r#"SELECT * FROM "t" WHERE "x" = ?"#);
    }
}
