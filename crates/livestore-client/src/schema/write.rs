//! What materializers return: [`Write`], SQL with bound parameters built by a small typed builder.
//!
//! It covers insert, update, delete and upsert plus raw SQL, and compiles to text and parameters at the call site;
//! values are never spliced into SQL text. `UPDATE`/`DELETE` conditions are the same [`Filter`]s reads use
//! (`schema::filter`), so a write's `WHERE` cannot lie either. Reads are `schema::query`; executing writes is
//! `db::writer`'s job.

use super::filter::{ColumnRef, Filter, Op, push_ident, push_where, where_params};
use crate::value::SqlValue;

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

    /// Adds a condition to the `WHERE` clause of an update or delete (`AND`ed with the others).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Adds `column = value` to the `WHERE` clause (`IS NULL` for a null value).
    pub fn where_eq(self, column: impl Into<ColumnRef>, value: impl Into<SqlValue>) -> Self {
        self.filter(Filter::new(column, Op::Eq(value.into())))
    }

    /// Adds `column <op>` to the `WHERE` clause.
    pub fn where_op(self, column: impl Into<ColumnRef>, op: Op) -> Self {
        self.filter(Filter::new(column, op))
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
        raw.iter().chain(values.iter().map(|(_, value)| value)).chain(where_params(filters))
    }
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
        let (sql, params) = Write::delete("todos")
            .where_op("id", Op::is_in(["a", "b"]))
            .where_op("text", Op::like("%x%"))
            .compile();
        assert_eq!(sql, r#"DELETE FROM "todos" WHERE "id" IN (?, ?) AND "text" LIKE ?"#);
        assert_eq!(params, vec![SqlValue::from("a"), SqlValue::from("b"), SqlValue::from("%x%")]);
        let (sql, params) = Write::update("todos")
            .set("completed", true)
            .where_op("deletedAt", Op::IsNotNull)
            .where_op("id", Op::Ne("t1".into()))
            .compile();
        assert_eq!(
            sql,
            r#"UPDATE "todos" SET "completed" = ? WHERE "deletedAt" IS NOT NULL AND "id" != ?"#
        );
        assert_eq!(params, vec![SqlValue::Integer(1), SqlValue::from("t1")]);
    }
}
