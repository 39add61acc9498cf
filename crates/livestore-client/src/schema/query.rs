//! Reads: [`Query`], a `SELECT` builder over a table or over raw SQL, with joins, filters, ordering, paging, and
//! the `first` / `count` / `exists` shapes.
//!
//! A query only compiles to SQL text plus bound parameters; running it and finding the tables it reads (for
//! subscriptions) is `db::query`'s job, which asks SQLite itself, so joins and raw SQL report every table they
//! touch. Builder refinements on a raw query apply to its result (it becomes a subquery), never silently dropped.

use super::filter::{ColumnRef, Filter, Op, push_ident, push_where, where_params};
use crate::value::SqlValue;

/// Where rows come from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Table(String),
    Sql { sql: String, params: Vec<SqlValue> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinKind {
    Inner,
    Left,
}

/// `[LEFT] JOIN table ON left = right`.
#[derive(Debug, Clone, PartialEq)]
struct Join {
    kind: JoinKind,
    table: String,
    left: ColumnRef,
    right: ColumnRef,
}

/// What the query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Rows,
    /// One row `{"count": n}`.
    Count,
    /// One row `{"exists": 0 | 1}`.
    Exists,
}

/// A read: SQL with parameters, built from a typed `SELECT` builder or given raw.
///
/// ```
/// use livestore_client::schema::{Op, Query};
/// let (sql, params) = Query::select("todos")
///     .join("tags", ("todos", "id"), ("tags", "todoId"))
///     .where_op(("tags", "name"), Op::is_in(["urgent", "today"]))
///     .where_eq(("todos", "deletedAt"), None::<i64>)
///     .count()
///     .compile();
/// assert_eq!(
///     sql,
///     r#"SELECT COUNT(*) AS "count" FROM "todos" INNER JOIN "tags" ON "todos"."id" = "tags"."todoId" WHERE "tags"."name" IN (?, ?) AND "todos"."deletedAt" IS NULL"#
/// );
/// assert_eq!(params.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    source: Source,
    joins: Vec<Join>,
    columns: Vec<ColumnRef>,
    filters: Vec<Filter>,
    order_by: Vec<(ColumnRef, bool)>,
    limit: Option<u64>,
    offset: Option<u64>,
    shape: Shape,
}

impl Query {
    fn new(source: Source) -> Self {
        Query {
            source,
            joins: Vec::new(),
            columns: Vec::new(),
            filters: Vec::new(),
            order_by: Vec::new(),
            limit: None,
            offset: None,
            shape: Shape::Rows,
        }
    }

    /// `SELECT * FROM table`, refined with the builder methods.
    pub fn select(table: impl Into<String>) -> Self {
        Query::new(Source::Table(table.into()))
    }

    /// Raw SQL with positional (`?`) parameters. Builder refinements (filters, ordering, paging, `count`, ...)
    /// apply to its result: the SQL becomes a subquery, so it must be a single `SELECT` without a trailing `;`.
    pub fn sql(sql: impl Into<String>, params: impl IntoIterator<Item = SqlValue>) -> Self {
        Query::new(Source::Sql { sql: sql.into(), params: params.into_iter().collect() })
    }

    /// Restricts the selected columns (qualify them as `("table", "column")` in joins).
    pub fn columns(mut self, columns: impl IntoIterator<Item = impl Into<ColumnRef>>) -> Self {
        self.columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// `INNER JOIN table ON left = right`: rows of both sides whose columns are equal.
    pub fn join(
        self,
        table: impl Into<String>,
        left: impl Into<ColumnRef>,
        right: impl Into<ColumnRef>,
    ) -> Self {
        self.push_join(JoinKind::Inner, table.into(), left.into(), right.into())
    }

    /// `LEFT JOIN table ON left = right`: every row of the left side, with nulls where nothing matches.
    pub fn left_join(
        self,
        table: impl Into<String>,
        left: impl Into<ColumnRef>,
        right: impl Into<ColumnRef>,
    ) -> Self {
        self.push_join(JoinKind::Left, table.into(), left.into(), right.into())
    }

    fn push_join(
        mut self,
        kind: JoinKind,
        table: String,
        left: ColumnRef,
        right: ColumnRef,
    ) -> Self {
        self.joins.push(Join { kind, table, left, right });
        self
    }

    /// Adds a condition (`AND`ed with the others).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Adds `column = value` (`IS NULL` for a null value).
    pub fn where_eq(self, column: impl Into<ColumnRef>, value: impl Into<SqlValue>) -> Self {
        self.filter(Filter::new(column, Op::Eq(value.into())))
    }

    /// Adds `column <op>`.
    pub fn where_op(self, column: impl Into<ColumnRef>, op: Op) -> Self {
        self.filter(Filter::new(column, op))
    }

    /// Orders by a column, ascending.
    pub fn order_by(mut self, column: impl Into<ColumnRef>) -> Self {
        self.order_by.push((column.into(), true));
        self
    }

    /// Orders by a column, descending.
    pub fn order_by_desc(mut self, column: impl Into<ColumnRef>) -> Self {
        self.order_by.push((column.into(), false));
        self
    }

    /// Returns at most `limit` rows.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Skips the first `offset` rows.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// At most one row (`LIMIT 1`); `Store::query_first` returns it as an `Option`.
    pub fn first(self) -> Self {
        self.limit(1)
    }

    /// One row `{"count": n}`: how many rows the query returns (paging included). See `Store::query_count`.
    pub fn count(mut self) -> Self {
        self.shape = Shape::Count;
        self
    }

    /// One row `{"exists": 0 | 1}`: whether the query returns any row. See `Store::query_exists`.
    pub fn exists(mut self) -> Self {
        self.shape = Shape::Exists;
        self
    }

    /// The SQL text and its parameters.
    pub fn compile(&self) -> (String, Vec<SqlValue>) {
        let mut sql = String::new();
        match self.shape {
            Shape::Rows => self.push_rows(&mut sql),
            // Without paging, count directly: the planner can then use a covering index.
            Shape::Count if self.is_table() && self.limit.is_none() && self.offset.is_none() => {
                sql.push_str("SELECT COUNT(*) AS \"count\"");
                self.push_from_where(&mut sql);
            }
            Shape::Count => {
                sql.push_str("SELECT COUNT(*) AS \"count\" FROM (");
                self.push_rows(&mut sql);
                sql.push(')');
            }
            Shape::Exists => {
                sql.push_str("SELECT EXISTS (");
                self.push_rows(&mut sql);
                sql.push_str(") AS \"exists\"");
            }
        }
        let raw_params = match &self.source {
            Source::Sql { params, .. } => params.as_slice(),
            Source::Table(_) => &[],
        };
        (sql, raw_params.iter().chain(where_params(&self.filters)).cloned().collect())
    }

    fn is_table(&self) -> bool {
        matches!(self.source, Source::Table(_))
    }

    /// The row-returning `SELECT` (raw SQL as given when nothing refines it).
    fn push_rows(&self, sql: &mut String) {
        if let Source::Sql { sql: raw, .. } = &self.source
            && self.joins.is_empty()
            && self.columns.is_empty()
            && self.filters.is_empty()
            && self.order_by.is_empty()
            && self.limit.is_none()
            && self.offset.is_none()
        {
            sql.push_str(raw);
            return;
        }
        sql.push_str("SELECT ");
        if self.columns.is_empty() {
            sql.push('*');
        }
        for (idx, column) in self.columns.iter().enumerate() {
            if idx > 0 {
                sql.push_str(", ");
            }
            column.push_sql(sql);
        }
        self.push_from_where(sql);
        for (idx, (column, ascending)) in self.order_by.iter().enumerate() {
            sql.push_str(if idx == 0 { " ORDER BY " } else { ", " });
            column.push_sql(sql);
            sql.push_str(if *ascending { " ASC" } else { " DESC" });
        }
        match (self.limit, self.offset) {
            (Some(limit), Some(offset)) => sql.push_str(&format!(" LIMIT {limit} OFFSET {offset}")),
            (Some(limit), None) => sql.push_str(&format!(" LIMIT {limit}")),
            // SQLite takes OFFSET only after a LIMIT; -1 is "no limit".
            (None, Some(offset)) => sql.push_str(&format!(" LIMIT -1 OFFSET {offset}")),
            (None, None) => {}
        }
    }

    /// ` FROM source [joins] [WHERE ...]`.
    fn push_from_where(&self, sql: &mut String) {
        sql.push_str(" FROM ");
        match &self.source {
            Source::Table(table) => push_ident(sql, table),
            Source::Sql { sql: raw, .. } => {
                sql.push('(');
                sql.push_str(raw);
                sql.push(')');
            }
        }
        for join in &self.joins {
            sql.push_str(match join.kind {
                JoinKind::Inner => " INNER JOIN ",
                JoinKind::Left => " LEFT JOIN ",
            });
            push_ident(sql, &join.table);
            sql.push_str(" ON ");
            join.left.push_sql(sql);
            sql.push_str(" = ");
            join.right.push_sql(sql);
        }
        push_where(sql, &self.filters);
    }
}
