//! Which state tables a transaction wrote, as seen by the connection's update hook (for subscriptions).
//!
//! The hook runs for every changed row, so schema tables are flags found by position (a handful of string
//! comparisons, no lock); a table outside the schema (raw SQL may create one) falls back to a locked set.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::schema::Schema;

/// Tables written since the last [`ChangedTables::take`].
#[derive(Debug)]
pub(crate) struct ChangedTables {
    names: Vec<String>,
    flags: Vec<AtomicBool>,
    others: Mutex<BTreeSet<String>>,
}

impl ChangedTables {
    pub(crate) fn new(schema: &Schema) -> Self {
        let names: Vec<String> = schema.tables().iter().map(|table| table.name.clone()).collect();
        let flags = names.iter().map(|_| AtomicBool::new(false)).collect();
        ChangedTables { names, flags, others: Mutex::new(BTreeSet::new()) }
    }

    /// The position of a schema table (the same order as [`Schema::tables`]).
    pub(crate) fn index_of(&self, table: &str) -> Option<usize> {
        self.names.iter().position(|name| name == table)
    }

    /// Marks a table by its position, or by name if it is not a schema table.
    pub(crate) fn mark(&self, index: Option<usize>, table: &str) {
        match index.and_then(|index| self.flags.get(index)) {
            Some(flag) => flag.store(true, Ordering::Relaxed),
            None => {
                if let Ok(mut others) = self.others.lock() {
                    others.insert(table.to_owned());
                }
            }
        }
    }

    /// Marks every schema table (after a rebuild or reset).
    pub(crate) fn mark_all(&self) {
        for flag in &self.flags {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// The tables marked since the last call, clearing the marks.
    pub(crate) fn take(&self) -> BTreeSet<String> {
        let mut tables =
            self.others.lock().map(|mut others| std::mem::take(&mut *others)).unwrap_or_default();
        for (name, flag) in self.names.iter().zip(&self.flags) {
            if flag.swap(false, Ordering::Relaxed) {
                tables.insert(name.clone());
            }
        }
        tables
    }
}
