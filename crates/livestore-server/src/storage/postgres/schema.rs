//! The Postgres schema and its versioned migrations, applied at start under an advisory lock so that nodes
//! starting together do not race: the first applies what is missing, the others find it done.
//!
//! Every table is prefixed `livestore_`, so the log may share a database with other applications.
//! `livestore_schema_migrations` records each applied version; a database with our tables but no record of them,
//! or with a version newer than this build knows, is refused, never altered.

use crate::error::ServerError;

/// Key of the advisory lock held while migrating (ASCII "LSSYMIGR").
const MIGRATION_LOCK_KEY: i64 = 0x4C53_5359_4D49_4752;

/// Migrations in order; the version is the position, starting at 1. Never edit one that has shipped.
const MIGRATIONS: &[(&str, &str)] = &[
    (
    "stores with their head, and events",
    "
CREATE TABLE livestore_stores (
    store_key BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store_id TEXT NOT NULL UNIQUE,
    backend_id TEXT NOT NULL,
    -- The last committed seqNum, moved in the transaction that appends; its row lock serializes pushes.
    head BIGINT NOT NULL DEFAULT 0 CHECK (head >= 0),
    created_at TEXT NOT NULL
);
-- No foreign key to livestore_stores: its per-row trigger tripled the cost of an insert, and the writer only
-- appends under the lock of the store row it took the key from.
CREATE TABLE livestore_events (
    store_key BIGINT NOT NULL,
    seq_num BIGINT NOT NULL CHECK (seq_num > 0),
    parent_seq_num BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    -- The event's compact JSON as first accepted, echoed byte for byte.
    encoded TEXT NOT NULL,
    PRIMARY KEY (store_key, seq_num),
    CHECK (seq_num = parent_seq_num + 1)
);
",
    ),
    (
        "delivery cursors of committed events",
        "
-- How far each subscriber of committed events got in each store (see storage::cursors). No foreign key: its check
-- would take a share lock on the store row, which the writer locks FOR UPDATE on every push.
CREATE TABLE livestore_delivery_cursors (
    subscriber TEXT NOT NULL,
    store_key BIGINT NOT NULL,
    -- Every event up to here was acknowledged by the subscriber.
    delivered BIGINT NOT NULL CHECK (delivered >= 0),
    -- The end of the batch being sent; resent exactly until acknowledged.
    pending_until BIGINT CHECK (pending_until IS NULL OR pending_until > delivered),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber, store_key)
);
",
    ),
];

/// Brings the database to the newest schema this build knows.
pub(super) async fn migrate(
    client: &mut tokio_postgres::Client,
    database: &str,
) -> Result<(), ServerError> {
    let incompatible = |reason: String| ServerError::IncompatibleDatabase {
        database: database.to_owned(),
        reason,
    };
    let transaction = client.transaction().await?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    let row = transaction
        .query_one(
            "SELECT to_regclass('livestore_schema_migrations') IS NOT NULL,
                    to_regclass('livestore_stores') IS NOT NULL",
            &[],
        )
        .await?;
    let (has_migrations, has_stores): (bool, bool) = (row.get(0), row.get(1));
    if has_stores && !has_migrations {
        return Err(incompatible(
            "it has a livestore_stores table that livestore serve did not create".into(),
        ));
    }
    if !has_migrations {
        transaction
            .batch_execute(
                "CREATE TABLE livestore_schema_migrations (
                    version INTEGER PRIMARY KEY,
                    description TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )",
            )
            .await?;
    }
    let applied: i32 = transaction
        .query_one("SELECT coalesce(max(version), 0) FROM livestore_schema_migrations", &[])
        .await?
        .get(0);
    let newest = MIGRATIONS.len() as i32;
    if applied > newest {
        return Err(incompatible(format!(
            "schema version {applied} is newer than this build understands ({newest}); upgrade livestore"
        )));
    }
    for (index, (description, sql)) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let version = index as i32 + 1;
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO livestore_schema_migrations (version, description) VALUES ($1, $2)",
                &[&version, description],
            )
            .await?;
        tracing::info!(
            target: "livestore_server::_events::migrated",
            version,
            description,
            "applied Postgres migration"
        );
    }
    transaction.commit().await?;
    Ok(())
}
