//! Running queries: rows as JSON objects, rows decoded into serde types, scalar results of `count`/`exists`, and
//! the set of tables a query reads.
//!
//! Which tables a query reads is asked of SQLite itself: the statement is prepared once under an authorizer that
//! records every `SQLITE_READ`, so views, joins and subqueries are covered without parsing SQL here.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::schema::Query;
use crate::value::{ColumnKind, value_ref_to_json};

/// One result row: column name to JSON value (booleans and JSON columns decoded by declared type).
pub type Row = serde_json::Map<String, serde_json::Value>;

/// Runs a query and returns its rows.
pub(crate) fn query_rows(conn: &Connection, query: &Query) -> Result<Vec<Row>, StoreError> {
    let (sql, params) = query.compile();
    let mut statement = conn.prepare_cached(&sql)?;
    let names: Vec<String> = statement.column_names().into_iter().map(str::to_owned).collect();
    let kinds: Vec<ColumnKind> = statement
        .columns()
        .iter()
        .map(|column| ColumnKind::from_decl_type(column.decl_type()))
        .collect();
    let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
    let mut result = Vec::new();
    while let Some(row) = rows.next()? {
        let mut object = Row::with_capacity(names.len());
        for (idx, name) in names.iter().enumerate() {
            object.insert(name.clone(), value_ref_to_json(row.get_ref(idx)?, kinds[idx]));
        }
        result.push(object);
    }
    Ok(result)
}

/// Decodes rows into `T`.
pub(crate) fn rows_to_typed<T: DeserializeOwned>(rows: Vec<Row>) -> Result<Vec<T>, StoreError> {
    rows.into_iter()
        .map(|row| {
            serde_json::from_value(serde_json::Value::Object(row)).map_err(StoreError::Decode)
        })
        .collect()
}

/// The one integer column of a `count()` or `exists()` query's single row.
pub(crate) fn scalar_u64(rows: &[Row], column: &str) -> Result<u64, StoreError> {
    let value = rows.first().and_then(|row| row.get(column)).cloned().unwrap_or_default();
    serde_json::from_value(value).map_err(StoreError::Decode)
}

/// The state tables a query reads (names without schema), found by preparing it under an authorizer.
pub(crate) fn tables_read(
    conn: &Connection,
    query: &Query,
) -> Result<BTreeSet<String>, StoreError> {
    let (sql, _) = query.compile();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let sink = Arc::clone(&seen);
    conn.authorizer(Some(move |context: AuthContext<'_>| {
        if let AuthAction::Read { table_name, .. } = context.action
            && context.database_name.is_none_or(|database| database == "state")
            && let Ok(mut tables) = sink.lock()
        {
            tables.insert(table_name.to_owned());
        }
        Authorization::Allow
    }));
    // A plain `prepare`: a cached statement would not be re-authorized.
    let prepared = conn.prepare(&sql).map(drop);
    conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    prepared?;
    let tables = seen.lock().map(|tables| tables.clone()).unwrap_or_default();
    Ok(tables)
}

impl crate::schema::StateQuery for Connection {
    fn query_json(&self, query: &Query) -> Result<Vec<Row>, StoreError> {
        query_rows(self, query)
    }
}
