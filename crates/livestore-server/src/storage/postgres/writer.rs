//! The node's writer: one task, one connection, group commits.
//!
//! It drains every queued push into one transaction: lock the rows of the stores involved (`FOR UPDATE`, in
//! `store_key` order), admit each push in arrival order against the locked heads (pipelined pushes to one store
//! see each other's heads), then one statement inserts every accepted event, moves the heads and queues one
//! notification per store, and the commit makes all of it durable and visible at once. After the commit,
//! refusals are answered and accepted batches go to their stores' publishers, which answer them once published.
//! A failed transaction leaves nothing behind; every push in it gets the error and its client retries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use livestore_proto::admission::admit;
use livestore_proto::rpc::PushArgs;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Statement};

use super::publisher::{Registry, Reply};
use super::{CHANNEL, Shared, StoreRow, connect, new_backend_id, now_rfc3339};
use crate::error::ServerError;
use crate::storage::{AppendOutcome, StoredEvent};

/// Upper bound of pushes folded into one transaction; bounds reply latency under heavy load.
const MAX_PUSHES_PER_COMMIT: usize = 2048;

/// One push for the writer.
#[derive(Debug)]
pub(super) struct Command {
    pub(super) store_id: String,
    pub(super) push: PushArgs,
    pub(super) reply: Reply,
}

/// The writer task's state.
pub(super) struct Writer {
    config: Arc<tokio_postgres::Config>,
    shared: Arc<Shared>,
    connection: Option<WriteConnection>,
}

struct WriteConnection {
    client: Client,
    create_stores: Statement,
    find_stores: Statement,
    lock_stores: Statement,
    append: Statement,
}

/// What admission decided for one push, answered after the commit.
enum Decision {
    Refused(AppendOutcome),
    Accepted { store_key: i64, events: Vec<StoredEvent> },
}

impl Writer {
    pub(super) fn new(config: Arc<tokio_postgres::Config>, shared: Arc<Shared>) -> Self {
        Writer { config, shared, connection: None }
    }

    /// Commits queued pushes until the storage shuts down (the sender is dropped) and the queue is empty.
    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = commands.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_PUSHES_PER_COMMIT {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch).await;
        }
    }

    async fn commit_batch(&mut self, commands: Vec<Command>) {
        let (pushes, replies): (Vec<(String, PushArgs)>, Vec<Reply>) = commands
            .into_iter()
            .map(|command| ((command.store_id, command.push), command.reply))
            .unzip();
        let decisions = match self.commit_batch_impl(&pushes).await {
            Ok(decisions) => decisions,
            Err(error) => {
                if self.connection.as_ref().is_none_or(|connection| connection.client.is_closed()) {
                    self.connection = None;
                }
                tracing::error!(%error, pushes = replies.len(), "group commit failed; its pushes are refused and clients will retry");
                let error = match error {
                    ServerError::Postgres(error) if !error.is_closed() => {
                        ServerError::Postgres(error)
                    }
                    _ => ServerError::StorageUnavailable,
                };
                for reply in replies {
                    let _ = reply.send(Err(copy_error(&error)));
                }
                return;
            }
        };
        for ((decision, reply), (store_id, _)) in decisions.into_iter().zip(replies).zip(&pushes) {
            match decision {
                Decision::Refused(outcome) => {
                    let _ = reply.send(Ok(outcome));
                }
                Decision::Accepted { store_key, events } => {
                    self.shared.metrics.events_appended.inc_by(events.len() as u64);
                    let head = events.last().map_or(0, |event| event.seq_num);
                    self.shared.commits.committed(store_id, head);
                    Registry::committed(&self.shared, store_key, events, reply);
                }
            }
        }
    }

    async fn commit_batch_impl(
        &mut self,
        pushes: &[(String, PushArgs)],
    ) -> Result<Vec<Decision>, ServerError> {
        if self.connection.as_ref().is_none_or(|connection| connection.client.is_closed()) {
            self.connection = Some(WriteConnection::open(&self.config).await?);
        }
        let connection = self.connection.as_ref().expect("connected above");
        let rows = resolve_stores(&self.shared, connection, pushes).await?;
        let keys: Vec<i64> =
            rows.values().map(|row| row.key).collect::<BTreeSet<_>>().into_iter().collect();

        // BEGIN and the lock travel together (one round trip); so do the append and COMMIT below.
        let client = &connection.client;
        let lock_parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&keys];
        let (begun, locked) = tokio::join!(
            client.batch_execute("BEGIN"),
            client.query(&connection.lock_stores, &lock_parameters)
        );
        let locked = match begun.and(locked) {
            Ok(rows) => rows,
            Err(error) => {
                rollback(client).await;
                return Err(error.into());
            }
        };
        let mut heads: HashMap<i64, u64> =
            locked.iter().map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1) as u64)).collect();

        let created_at = now_rfc3339();
        let mut decisions = Vec::with_capacity(pushes.len());
        let mut new_heads: BTreeMap<i64, u64> = BTreeMap::new();
        let (mut event_keys, mut seq_nums, mut parents, mut encoded) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (store_id, push) in pushes {
            let row = &rows[store_id.as_str()];
            let Some(head) = heads.get_mut(&row.key) else {
                // The row vanished after we cached it (a database restored under a running node).
                rollback(client).await;
                return Err(ServerError::StorageUnavailable);
            };
            let decision = match AppendOutcome::from_admission(admit(*head, &row.backend_id, push))
            {
                Some(refused) => Decision::Refused(refused),
                None => {
                    let mut events = Vec::with_capacity(push.batch.len());
                    for event in &push.batch {
                        let encoded_json = event.to_json();
                        event_keys.push(row.key);
                        seq_nums.push(event.seq_num.0 as i64);
                        parents.push(event.parent_seq_num.0 as i64);
                        encoded.push(encoded_json.clone());
                        events.push(StoredEvent {
                            seq_num: event.seq_num.0,
                            encoded_json,
                            created_at: created_at.clone(),
                        });
                    }
                    *head = events.last().map_or(*head, |event| event.seq_num);
                    new_heads.insert(row.key, *head);
                    Decision::Accepted { store_key: row.key, events }
                }
            };
            decisions.push(decision);
        }
        if new_heads.is_empty() {
            client.batch_execute("COMMIT").await?;
            return Ok(decisions);
        }
        let head_keys: Vec<i64> = new_heads.keys().copied().collect();
        let head_values: Vec<i64> = new_heads.values().map(|head| *head as i64).collect();
        let notifications: Vec<String> =
            new_heads.iter().map(|(key, head)| format!("{key}:{head}")).collect();
        let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &event_keys,
            &seq_nums,
            &parents,
            &created_at,
            &encoded,
            &head_keys,
            &head_values,
            &notifications,
        ];
        // If the append fails, the transaction is aborted and this COMMIT rolls it back: nothing is half-written.
        let (appended, committed) = tokio::join!(
            client.execute(&connection.append, &parameters),
            client.batch_execute("COMMIT")
        );
        appended?;
        committed?;
        Ok(decisions)
    }
}

/// The rows of every store in `pushes`, creating missing ones (outside the group's transaction, in store id order
/// so that two nodes creating the same stores cannot deadlock).
async fn resolve_stores(
    shared: &Shared,
    connection: &WriteConnection,
    pushes: &[(String, PushArgs)],
) -> Result<HashMap<String, StoreRow>, ServerError> {
    let mut rows = HashMap::new();
    let mut missing = BTreeSet::new();
    for (store_id, _) in pushes {
        if rows.contains_key(store_id) {
            continue;
        }
        match shared.cached_row(store_id) {
            Some(row) => {
                rows.insert(store_id.clone(), row);
            }
            None => {
                missing.insert(store_id.clone());
            }
        }
    }
    if missing.is_empty() {
        return Ok(rows);
    }
    let missing: Vec<String> = missing.into_iter().collect();
    let backend_ids: Vec<String> = missing.iter().map(|_| new_backend_id()).collect();
    let created_at = now_rfc3339();
    for row in connection
        .client
        .query(&connection.create_stores, &[&missing, &backend_ids, &created_at])
        .await?
    {
        let store_id: &str = row.get(0);
        tracing::info!(target: "livestore_server::_events::store_created", store_id, "created store log");
    }
    for row in connection.client.query(&connection.find_stores, &[&missing]).await? {
        let store_id: String = row.get(0);
        let found = StoreRow { key: row.get(1), backend_id: Arc::from(row.get::<_, &str>(2)) };
        shared.remember_row(&store_id, found.clone());
        rows.insert(store_id, found);
    }
    if rows.len() < pushes.iter().map(|(store_id, _)| store_id).collect::<BTreeSet<_>>().len() {
        return Err(ServerError::StorageUnavailable);
    }
    Ok(rows)
}

impl WriteConnection {
    async fn open(config: &tokio_postgres::Config) -> Result<Self, ServerError> {
        let client = connect(config).await?;
        // A node that stalls inside a transaction must not hold store locks for long: Postgres ends the session.
        // A push waiting on another node's lock gives up instead of queueing forever; its client retries.
        client
            .batch_execute(
                "SET idle_in_transaction_session_timeout = '15s'; SET lock_timeout = '10s'",
            )
            .await?;
        Ok(WriteConnection {
            create_stores: client
                .prepare(
                    "INSERT INTO livestore_stores (store_id, backend_id, created_at)
                     SELECT store_id, backend_id, $3 FROM unnest($1::text[], $2::text[]) AS new (store_id, backend_id)
                     ON CONFLICT (store_id) DO NOTHING RETURNING store_id",
                )
                .await?,
            find_stores: client
                .prepare(
                    "SELECT store_id, store_key, backend_id FROM livestore_stores WHERE store_id = ANY($1)",
                )
                .await?,
            lock_stores: client
                .prepare(
                    "SELECT store_key, head FROM livestore_stores WHERE store_key = ANY($1)
                     ORDER BY store_key FOR UPDATE",
                )
                .await?,
            append: client
                .prepare(&format!(
                    "WITH inserted AS (
                         INSERT INTO livestore_events (store_key, seq_num, parent_seq_num, created_at, encoded)
                         SELECT store_key, seq_num, parent_seq_num, $4, encoded
                         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $5::text[])
                             AS new (store_key, seq_num, parent_seq_num, encoded)
                     ), moved AS (
                         UPDATE livestore_stores SET head = moved.head
                         FROM unnest($6::bigint[], $7::bigint[]) AS moved (store_key, head)
                         WHERE livestore_stores.store_key = moved.store_key
                     )
                     SELECT pg_notify('{CHANNEL}', payload) FROM unnest($8::text[]) AS notification (payload)"
                ))
                .await?,
            client,
        })
    }
}

/// Ends a failed transaction; if the connection is gone, Postgres rolls back on its own.
async fn rollback(client: &Client) {
    if let Err(error) = client.batch_execute("ROLLBACK").await {
        tracing::debug!(%error, "rollback failed");
    }
}

/// One failure, answered to every push of the group.
fn copy_error(error: &ServerError) -> ServerError {
    match error {
        ServerError::Postgres(error) => ServerError::Postgres(error.clone()),
        _ => ServerError::StorageUnavailable,
    }
}
