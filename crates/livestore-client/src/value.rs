//! SQL values bound to statements and read from rows, and the conversion of result rows to JSON for serde.
//!
//! Materializers and queries pass parameters as [`SqlValue`]; typed queries read rows through JSON objects so any
//! `serde::Deserialize` type works. Booleans and JSON columns are recognised by their declared type (see
//! [`crate::schema::ColumnType::decl_type`]), so `completed` reads back as `true`, not `1`.

use rusqlite::types::{ToSqlOutput, ValueRef};

/// A value SQLite can store.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// A 64-bit integer (also booleans and epoch-millisecond dates).
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text (also JSON and ISO dates).
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(value) => ValueRef::Integer(*value),
            SqlValue::Real(value) => ValueRef::Real(*value),
            SqlValue::Text(value) => ValueRef::Text(value.as_bytes()),
            SqlValue::Blob(value) => ValueRef::Blob(value),
        }))
    }
}

macro_rules! from_integer {
    ($($ty:ty),*) => {$(
        impl From<$ty> for SqlValue {
            fn from(value: $ty) -> Self {
                SqlValue::Integer(i64::from(value))
            }
        }
    )*};
}
from_integer!(i8, i16, i32, i64, u8, u16, u32);

impl From<bool> for SqlValue {
    fn from(value: bool) -> Self {
        SqlValue::Integer(i64::from(value))
    }
}

impl From<f64> for SqlValue {
    fn from(value: f64) -> Self {
        SqlValue::Real(value)
    }
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl From<&String> for SqlValue {
    fn from(value: &String) -> Self {
        SqlValue::Text(value.clone())
    }
}

impl From<Vec<u8>> for SqlValue {
    fn from(value: Vec<u8>) -> Self {
        SqlValue::Blob(value)
    }
}

impl From<serde_json::Value> for SqlValue {
    /// JSON values are stored as their compact text, as LiveStore's `json` columns are.
    fn from(value: serde_json::Value) -> Self {
        SqlValue::Text(value.to_string())
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(SqlValue::Null, Into::into)
    }
}

/// How a result column is turned into JSON, decided from its declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Plain,
    Boolean,
    Json,
}

impl ColumnKind {
    pub(crate) fn from_decl_type(decl_type: Option<&str>) -> Self {
        match decl_type.map(str::to_ascii_uppercase).as_deref() {
            Some(decl) if decl.starts_with("BOOLEAN") => ColumnKind::Boolean,
            Some(decl) if decl.starts_with("JSON") => ColumnKind::Json,
            _ => ColumnKind::Plain,
        }
    }
}

/// Converts one SQLite value to JSON according to the column's kind.
pub(crate) fn value_ref_to_json(value: ValueRef<'_>, kind: ColumnKind) -> serde_json::Value {
    use serde_json::Value;
    match (value, kind) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(number), ColumnKind::Boolean) => Value::Bool(number != 0),
        (ValueRef::Integer(number), _) => Value::from(number),
        (ValueRef::Real(number), _) => {
            serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
        }
        (ValueRef::Text(bytes), ColumnKind::Json) => {
            let text = String::from_utf8_lossy(bytes);
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()))
        }
        (ValueRef::Text(bytes), _) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        (ValueRef::Blob(bytes), _) => {
            Value::Array(bytes.iter().map(|byte| Value::from(*byte)).collect())
        }
    }
}
