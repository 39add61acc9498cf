//! The store's schema: event definitions with serde payload types, state tables, materializers, client
//! documents and the unknown-event strategy.
//!
//! A [`Schema`] is built once and shared by the store. It owns no connection: materializers are pure functions from
//! decoded args (plus read access to current state) to [`Write`]s, which the store executes. Determinism matters
//! because the same events are re-materialized on rebuild and after a rebase: no clocks or randomness in here.

pub mod datetime;
pub mod filter;
pub mod query;
pub mod table;
pub mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use livestore_core::event::LocalEvent;
use livestore_core::event_def::{EventDefMeta, UnknownEventStrategy};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
pub use filter::{ColumnRef, Filter, Op};
pub use query::Query;
pub use table::{Column, ColumnType, Index, Table};
pub use write::Write;

/// A typed event payload. The encoded form (what `serde` writes) is what travels and is stored.
///
/// ```
/// use livestore_client::schema::Event;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct TodoCompleted { id: String }
/// impl Event for TodoCompleted { const NAME: &'static str = "v1.TodoCompleted"; }
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The versioned event name, e.g. `v1.TodoCreated`.
    const NAME: &'static str;
    /// Client-only events are never pushed and get client sub-numbers.
    const CLIENT_ONLY: bool = false;
}

/// A materializer's own failure; the whole commit (or the one upstream event) is rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializerError(pub String);

impl MaterializerError {
    /// Wraps any displayable reason.
    pub fn new(reason: impl fmt::Display) -> Self {
        MaterializerError(reason.to_string())
    }
}

impl fmt::Display for MaterializerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Read access to current state and the event being materialized.
pub struct MaterializeContext<'a> {
    pub(crate) state: &'a dyn StateQuery,
    pub(crate) event: &'a LocalEvent,
}

/// Runs a query against current state for a materializer. The database layer implements it (`db::query`), so the
/// schema names no database code.
pub(crate) trait StateQuery {
    /// The query's rows, each a JSON object of column to value.
    fn query_json(
        &self,
        query: &Query,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StoreError>;
}

impl fmt::Debug for MaterializeContext<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("MaterializeContext").field("event", &self.event.seq_num).finish()
    }
}

impl MaterializeContext<'_> {
    /// The full event, including its sequence numbers and origin.
    pub fn event(&self) -> &LocalEvent {
        self.event
    }

    /// Runs a read-only query against the state as it is before this event's writes.
    pub fn query<T: DeserializeOwned>(&self, query: &Query) -> Result<Vec<T>, StoreError> {
        self.state
            .query_json(query)?
            .into_iter()
            .map(|row| {
                serde_json::from_value(serde_json::Value::Object(row)).map_err(StoreError::Decode)
            })
            .collect()
    }

    /// Like [`query`](Self::query) with `LIMIT 1`: the first row, or `None`.
    pub fn query_first<T: DeserializeOwned>(&self, query: &Query) -> Result<Option<T>, StoreError> {
        Ok(self.query(&query.clone().first())?.pop())
    }

    /// How many rows a query returns, in the state before this event's writes.
    pub fn query_count(&self, query: &Query) -> Result<u64, StoreError> {
        #[derive(serde::Deserialize)]
        struct Count {
            count: u64,
        }
        let counts: Vec<Count> = self.query(&query.clone().count())?;
        Ok(counts.first().map_or(0, |row| row.count))
    }

    /// Whether a query returns any row, in the state before this event's writes.
    pub fn query_exists(&self, query: &Query) -> Result<bool, StoreError> {
        Ok(self.query_count(&query.clone().limit(1))? > 0)
    }
}

/// Why materializing one event failed.
#[derive(Debug)]
pub(crate) enum MaterializeFailure {
    InvalidArgs(serde_json::Error),
    Materializer(MaterializerError),
}

type ErasedMaterializer = Arc<
    dyn Fn(&str, &MaterializeContext<'_>) -> Result<Vec<Write>, MaterializeFailure> + Send + Sync,
>;
type ArgsValidator = fn(&str) -> Result<(), serde_json::Error>;

/// One registered event type.
#[derive(Clone)]
pub(crate) struct EventDefinition {
    pub(crate) meta: EventDefMeta,
    pub(crate) validate: ArgsValidator,
    pub(crate) materializer: Option<ErasedMaterializer>,
    /// The name, shared by every event of this type instead of allocated per event.
    pub(crate) name: Arc<str>,
    /// The eventlog's `schemaHash` column for this event type.
    pub(crate) schema_hash: i64,
}

impl EventDefinition {
    fn new(
        meta: EventDefMeta,
        validate: ArgsValidator,
        materializer: Option<ErasedMaterializer>,
    ) -> Self {
        let name: Arc<str> = Arc::from(meta.name.as_str());
        let schema_hash = (fnv1a_64(meta.name.as_bytes()) >> 12) as i64;
        EventDefinition { meta, validate, materializer, name, schema_hash }
    }
}

impl fmt::Debug for EventDefinition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("EventDefinition").field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// The callback of [`UnknownEventHandling::Callback`].
pub type UnknownEventCallback = Arc<dyn Fn(&LocalEvent) + Send + Sync>;

/// What to do with an event whose name the schema does not know (or that has no materializer).
#[derive(Clone, Default)]
pub enum UnknownEventHandling {
    /// Keep it in the log, skip materialization, log a warning (the default).
    #[default]
    Warn,
    /// Keep it in the log and skip materialization silently.
    Ignore,
    /// Refuse it: a sync error for upstream events (local commits of unknown events are always refused).
    Fail,
    /// Keep it, skip materialization and call the callback.
    Callback(UnknownEventCallback),
}

impl UnknownEventHandling {
    /// The strategy without its callback.
    pub fn strategy(&self) -> UnknownEventStrategy {
        match self {
            UnknownEventHandling::Warn => UnknownEventStrategy::Warn,
            UnknownEventHandling::Ignore => UnknownEventStrategy::Ignore,
            UnknownEventHandling::Fail => UnknownEventStrategy::Fail,
            UnknownEventHandling::Callback(_) => UnknownEventStrategy::Callback,
        }
    }
}

impl fmt::Debug for UnknownEventHandling {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.strategy(), formatter)
    }
}

/// Whose document a client-document operation addresses when no id is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentDefaultId {
    /// The store's session id: per-session UI state (`SessionIdSymbol`).
    Session,
    /// A fixed id, e.g. `singleton`.
    Fixed(String),
}

/// A client document: a table `name(id text primary key, value json)` and a derived client-only `<name>Set` event.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientDocument {
    pub(crate) name: String,
    pub(crate) default_value: serde_json::Value,
    pub(crate) default_id: DocumentDefaultId,
    pub(crate) partial_set: bool,
}

impl ClientDocument {
    /// A document with the given default value, addressed per session by default, merging partial sets.
    pub fn new(name: impl Into<String>, default_value: serde_json::Value) -> Self {
        ClientDocument {
            name: name.into(),
            default_value,
            default_id: DocumentDefaultId::Session,
            partial_set: true,
        }
    }

    /// Uses a fixed default id instead of the session id.
    pub fn default_id(mut self, id: impl Into<String>) -> Self {
        self.default_id = DocumentDefaultId::Fixed(id.into());
        self
    }

    /// Makes `set` replace the whole value instead of merging top-level keys.
    pub fn replace_on_set(mut self) -> Self {
        self.partial_set = false;
        self
    }

    /// The derived event's name, `<name>Set`.
    pub fn set_event_name(&self) -> String {
        format!("{}Set", self.name)
    }

    /// The table definition behind the document.
    pub fn table(&self) -> Table {
        Table::new(self.name.clone())
            .column(Column::text("id").primary_key())
            .column(Column::json("value"))
    }
}

/// A complete, validated schema.
#[derive(Debug, Clone)]
pub struct Schema {
    pub(crate) tables: Vec<Table>,
    pub(crate) events: BTreeMap<String, EventDefinition>,
    pub(crate) documents: BTreeMap<String, ClientDocument>,
    pub(crate) unknown_event_handling: UnknownEventHandling,
    pub(crate) state_hash: u64,
}

impl Schema {
    /// Starts a schema.
    pub fn builder() -> SchemaBuilder {
        SchemaBuilder::default()
    }

    /// The state tables, including client-document tables.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Metadata of a registered event.
    pub fn event_meta(&self, name: &str) -> Option<&EventDefMeta> {
        self.events.get(name).map(|definition| &definition.meta)
    }

    /// A client document by table name.
    pub fn document(&self, name: &str) -> Option<&ClientDocument> {
        self.documents.get(name)
    }

    /// Hash of the state DDL; a change selects a new state database that is rebuilt from the eventlog.
    pub fn state_hash(&self) -> u64 {
        self.state_hash
    }

    pub(crate) fn definition(&self, name: &str) -> Option<&EventDefinition> {
        self.events.get(name)
    }
}

/// Collects tables, events and documents; [`SchemaBuilder::build`] validates them.
#[derive(Debug, Default)]
pub struct SchemaBuilder {
    tables: Vec<Table>,
    events: Vec<EventDefinition>,
    documents: Vec<ClientDocument>,
    unknown_event_handling: UnknownEventHandling,
}

impl SchemaBuilder {
    /// Adds a state table.
    pub fn table(mut self, table: Table) -> Self {
        self.tables.push(table);
        self
    }

    /// Adds an event type with its materializer.
    pub fn event<E, F>(mut self, materializer: F) -> Self
    where
        E: Event,
        F: Fn(&E, &MaterializeContext<'_>) -> Result<Vec<Write>, MaterializerError>
            + Send
            + Sync
            + 'static,
    {
        let erased: ErasedMaterializer = Arc::new(move |args_json, ctx| {
            let args: E =
                serde_json::from_str(args_json).map_err(MaterializeFailure::InvalidArgs)?;
            materializer(&args, ctx).map_err(MaterializeFailure::Materializer)
        });
        self.events.push(EventDefinition::new(event_meta::<E>(), validate_args::<E>, Some(erased)));
        self
    }

    /// Adds an event type that changes no state (it is only logged and synced).
    pub fn event_without_materializer<E: Event>(mut self) -> Self {
        self.events.push(EventDefinition::new(event_meta::<E>(), validate_args::<E>, None));
        self
    }

    /// Adds a client document, its table and its derived `<name>Set` event.
    pub fn client_document(mut self, document: ClientDocument) -> Self {
        self.tables.push(document.table());
        let table = document.name.clone();
        let default_json = document.default_value.to_string();
        let partial = document.partial_set;
        let erased: ErasedMaterializer = Arc::new(move |args_json, _ctx| {
            let args: DocumentSetArgs =
                serde_json::from_str(args_json).map_err(MaterializeFailure::InvalidArgs)?;
            let value_json = args.value.to_string();
            let quoted = table::quote_ident(&table);
            let sql = if partial {
                // Top-level merge onto the stored value (or the default for a new row), like LiveStore's
                // `partialSet`.
                format!(
                    "INSERT INTO {quoted} (id, value) VALUES (?1, json_patch(?2, ?3)) \
                     ON CONFLICT (id) DO UPDATE SET value = json_patch(value, ?3)"
                )
            } else {
                format!(
                    "INSERT INTO {quoted} (id, value) VALUES (?1, json(?3)) ON CONFLICT (id) DO UPDATE SET value = json(?3)"
                )
            };
            Ok(vec![Write::raw(
                sql,
                [args.id.into(), default_json.clone().into(), value_json.into()],
            )])
        });
        self.events.push(EventDefinition::new(
            EventDefMeta::client_only(document.set_event_name()).derived(),
            validate_args::<DocumentSetArgs>,
            Some(erased),
        ));
        self.documents.push(document);
        self
    }

    /// Sets the unknown-event strategy (default: warn).
    pub fn unknown_event_handling(mut self, handling: UnknownEventHandling) -> Self {
        self.unknown_event_handling = handling;
        self
    }

    /// Validates names and computes the state hash.
    pub fn build(self) -> Result<Schema, StoreError> {
        let mut events = BTreeMap::new();
        for definition in self.events {
            let name = definition.meta.name.clone();
            if events.insert(name.clone(), definition).is_some() {
                return Err(StoreError::InvalidSchema(format!("event {name:?} is defined twice")));
            }
        }
        let mut seen_tables = std::collections::HashSet::new();
        // The version line changes whenever the state file layout does (v2: undo log keyed by event and counter),
        // so existing stores get a new state file rebuilt from their eventlog.
        let mut ddl = String::from("livestore-client state v2\n");
        for table in &self.tables {
            if table.name.starts_with("__") || table.name.starts_with("sqlite_") {
                return Err(StoreError::InvalidSchema(format!(
                    "table name {:?} is reserved",
                    table.name
                )));
            }
            if !seen_tables.insert(table.name.clone()) {
                return Err(StoreError::InvalidSchema(format!(
                    "table {:?} is defined twice",
                    table.name
                )));
            }
            if table.columns.is_empty() {
                return Err(StoreError::InvalidSchema(format!(
                    "table {:?} has no columns",
                    table.name
                )));
            }
            for statement in table.ddl("state") {
                ddl.push_str(&statement);
                ddl.push('\n');
            }
        }
        let documents =
            self.documents.into_iter().map(|document| (document.name.clone(), document)).collect();
        Ok(Schema {
            tables: self.tables,
            events,
            documents,
            unknown_event_handling: self.unknown_event_handling,
            state_hash: fnv1a_64(ddl.as_bytes()),
        })
    }
}

/// Args of a client document's `<name>Set` event, as LiveStore encodes them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct DocumentSetArgs {
    pub(crate) id: String,
    pub(crate) value: serde_json::Value,
}

fn event_meta<E: Event>() -> EventDefMeta {
    if E::CLIENT_ONLY { EventDefMeta::client_only(E::NAME) } else { EventDefMeta::synced(E::NAME) }
}

fn validate_args<T: DeserializeOwned>(args_json: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<T>(args_json).map(|_| ())
}

/// FNV-1a: a stable hash (unlike `DefaultHasher`, whose algorithm may change between Rust releases).
pub(crate) fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
