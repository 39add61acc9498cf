//! `WHERE` clauses that cannot lie: column references, the [`Op`] operator enum and the [`Filter`] they make.
//!
//! [`Query`](super::Query) and [`Write`](super::Write) share these types, so a materializer's `UPDATE ... WHERE` is
//! checked the same way as a read. Operators are an enum, never SQL text: an operator that is not in the enum cannot
//! be written, and [`Op::parse`] refuses unknown operator strings instead of guessing. Values are always bound
//! parameters; identifiers are always double-quoted (embedded quotes doubled), and the store disables SQLite's
//! "double-quoted string literal" fallback (`db::open`), so a misspelt or hostile column name is an error, not a
//! string constant. Running the SQL is the store's job (`db::query`, `db::writer`).

use crate::error::StoreError;
use crate::value::SqlValue;

/// A column, optionally qualified by its table (`"todos"."id"`), as joins need.
///
/// Built from `"column"` (never split at dots, so a name is always one identifier) or `("table", "column")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRef {
    table: Option<String>,
    column: String,
}

impl ColumnRef {
    /// An unqualified column.
    pub fn new(column: impl Into<String>) -> Self {
        ColumnRef { table: None, column: column.into() }
    }

    /// `table.column`.
    pub fn qualified(table: impl Into<String>, column: impl Into<String>) -> Self {
        ColumnRef { table: Some(table.into()), column: column.into() }
    }

    /// Appends the quoted reference.
    pub(crate) fn push_sql(&self, sql: &mut String) {
        if let Some(table) = &self.table {
            push_ident(sql, table);
            sql.push('.');
        }
        push_ident(sql, &self.column);
    }
}

impl From<&str> for ColumnRef {
    fn from(column: &str) -> Self {
        ColumnRef::new(column)
    }
}

impl From<String> for ColumnRef {
    fn from(column: String) -> Self {
        ColumnRef::new(column)
    }
}

impl From<&String> for ColumnRef {
    fn from(column: &String) -> Self {
        ColumnRef::new(column.as_str())
    }
}

impl From<(&str, &str)> for ColumnRef {
    fn from((table, column): (&str, &str)) -> Self {
        ColumnRef::qualified(table, column)
    }
}

/// A comparison operator with its operand(s).
///
/// Comparisons follow SQL, with one deliberate exception that keeps `NULL` from silently matching nothing:
/// `Eq(Null)` is `IS NULL` and `Ne(Null)` is `IS NOT NULL`, and a `NULL` inside `In`/`NotIn` is treated the same way
/// (`In` is the `OR` of `Eq`s, `NotIn` the `AND` of `Ne`s). Otherwise a `NULL` column matches no comparison.
/// An empty `In` matches no row; an empty `NotIn` matches every row.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// `= ?` (`IS NULL` for a null value).
    Eq(SqlValue),
    /// `!= ?` (`IS NOT NULL` for a null value).
    Ne(SqlValue),
    /// `< ?`.
    Lt(SqlValue),
    /// `<= ?`.
    Le(SqlValue),
    /// `> ?`.
    Gt(SqlValue),
    /// `>= ?`.
    Ge(SqlValue),
    /// `LIKE ?` with a bound pattern (`%` and `_` are wildcards; ASCII case-insensitive, as in SQLite).
    Like(SqlValue),
    /// `NOT LIKE ?` with a bound pattern.
    NotLike(SqlValue),
    /// `IN (?, ...)`, one parameter per value.
    In(Vec<SqlValue>),
    /// `NOT IN (?, ...)`, one parameter per value.
    NotIn(Vec<SqlValue>),
    /// `IS NULL`.
    IsNull,
    /// `IS NOT NULL`.
    IsNotNull,
}

impl Op {
    /// `In` from any values.
    pub fn is_in(values: impl IntoIterator<Item = impl Into<SqlValue>>) -> Self {
        Op::In(values.into_iter().map(Into::into).collect())
    }

    /// `NotIn` from any values.
    pub fn not_in(values: impl IntoIterator<Item = impl Into<SqlValue>>) -> Self {
        Op::NotIn(values.into_iter().map(Into::into).collect())
    }

    /// `Like` from a pattern.
    pub fn like(pattern: impl Into<String>) -> Self {
        Op::Like(SqlValue::Text(pattern.into()))
    }

    /// Parses a binary operator as written in SQL (`=`, `==`, `!=`, `<>`, `<`, `<=`, `>`, `>=`, `LIKE`,
    /// `NOT LIKE`; case and surrounding blanks ignored), for filters that arrive as text.
    ///
    /// Anything else is [`StoreError::UnknownOperator`]: guessing would run a different filter than the one asked
    /// for, and for a write that means changing the wrong rows.
    pub fn parse(operator: &str, value: impl Into<SqlValue>) -> Result<Self, StoreError> {
        let normalized =
            operator.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_uppercase();
        let make: fn(SqlValue) -> Op = match normalized.as_str() {
            "=" | "==" => Op::Eq,
            "!=" | "<>" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "LIKE" => Op::Like,
            "NOT LIKE" => Op::NotLike,
            _ => return Err(StoreError::UnknownOperator(operator.to_owned())),
        };
        Ok(make(value.into()))
    }
}

/// One condition of a `WHERE` clause: a column and an operator. Conditions of one query are `AND`ed.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    column: ColumnRef,
    op: Op,
}

impl Filter {
    /// `column <op>`.
    pub fn new(column: impl Into<ColumnRef>, op: Op) -> Self {
        Filter { column: column.into(), op }
    }

    /// Appends this condition (see [`Op`] for how nulls and lists compile).
    fn push_sql(&self, sql: &mut String) {
        let binary = |sql: &mut String, operator: &str| {
            self.column.push_sql(sql);
            sql.push_str(operator);
        };
        match &self.op {
            Op::Eq(SqlValue::Null) | Op::IsNull => binary(sql, " IS NULL"),
            Op::Ne(SqlValue::Null) | Op::IsNotNull => binary(sql, " IS NOT NULL"),
            Op::Eq(_) => binary(sql, " = ?"),
            Op::Ne(_) => binary(sql, " != ?"),
            Op::Lt(_) => binary(sql, " < ?"),
            Op::Le(_) => binary(sql, " <= ?"),
            Op::Gt(_) => binary(sql, " > ?"),
            Op::Ge(_) => binary(sql, " >= ?"),
            Op::Like(_) => binary(sql, " LIKE ?"),
            Op::NotLike(_) => binary(sql, " NOT LIKE ?"),
            Op::In(values) => self.push_list(sql, values, true),
            Op::NotIn(values) => self.push_list(sql, values, false),
        }
    }

    /// `col [NOT] IN (?, ...)`; a null in the list becomes an explicit `IS [NOT] NULL` arm, because SQL's
    /// `x NOT IN (1, NULL)` is never true. SQLite accepts the empty list `()` with set semantics.
    fn push_list(&self, sql: &mut String, values: &[SqlValue], inside: bool) {
        let has_null = values.iter().any(|value| matches!(value, SqlValue::Null));
        if has_null {
            sql.push('(');
        }
        self.column.push_sql(sql);
        sql.push_str(if inside { " IN (" } else { " NOT IN (" });
        let bound = values.iter().filter(|value| !matches!(value, SqlValue::Null)).count();
        for idx in 0..bound {
            sql.push_str(if idx == 0 { "?" } else { ", ?" });
        }
        sql.push(')');
        if has_null {
            sql.push_str(if inside { " OR " } else { " AND " });
            self.column.push_sql(sql);
            sql.push_str(if inside { " IS NULL)" } else { " IS NOT NULL)" });
        }
    }

    /// The parameters this condition binds, in placeholder order (borrowed: text is not copied).
    fn params(&self) -> impl Iterator<Item = &SqlValue> {
        let (values, list) = match &self.op {
            Op::Eq(SqlValue::Null) | Op::Ne(SqlValue::Null) | Op::IsNull | Op::IsNotNull => {
                (&[][..], false)
            }
            Op::Eq(value)
            | Op::Ne(value)
            | Op::Lt(value)
            | Op::Le(value)
            | Op::Gt(value)
            | Op::Ge(value)
            | Op::Like(value)
            | Op::NotLike(value) => (std::slice::from_ref(value), false),
            Op::In(values) | Op::NotIn(values) => (values.as_slice(), true),
        };
        values.iter().filter(move |value| !(list && matches!(value, SqlValue::Null)))
    }
}

/// Appends ` WHERE a AND b ...` (nothing for no filters).
pub(crate) fn push_where(sql: &mut String, filters: &[Filter]) {
    for (idx, filter) in filters.iter().enumerate() {
        sql.push_str(if idx == 0 { " WHERE " } else { " AND " });
        filter.push_sql(sql);
    }
}

/// The parameters of a `WHERE` clause built by [`push_where`], in order.
pub(crate) fn where_params(filters: &[Filter]) -> impl Iterator<Item = &SqlValue> {
    filters.iter().flat_map(Filter::params)
}

/// Appends a double-quoted identifier, doubling embedded quotes: a name can never end the identifier early.
pub(crate) fn push_ident(sql: &mut String, name: &str) {
    sql.push('"');
    if name.contains('"') {
        sql.push_str(&name.replace('"', "\"\""));
    } else {
        sql.push_str(name);
    }
    sql.push('"');
}

#[cfg(test)]
mod tests;
