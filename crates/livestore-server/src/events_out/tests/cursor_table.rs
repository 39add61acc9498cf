//! The cursor table and leases of either backend, through the crate's `CursorStore`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::Node;
use crate::config::{DatabaseUrl, ServerConfig};
use crate::storage::cursors::{Cursor, CursorWrite, SCAN_PAGE_STORES};

/// A subscriber no delivery task runs for, so only the test moves its cursors.
const SUBSCRIBER: &str = "cursor-test";

pub(super) async fn compare_and_set(node: &Node) {
    node.append("cas", 0, 10, 10).await;
    let lease = node.cursors.acquire(SUBSCRIBER).await.unwrap().expect("nobody else holds it");
    let at = |delivered, pending| Cursor { delivered, pending };
    assert_eq!(lease.load("cas").await.unwrap(), at(0, None), "no row: the beginning");
    assert_eq!(lease.begin("cas", 0, 4).await.unwrap(), CursorWrite::Written);
    assert_eq!(lease.load("cas").await.unwrap(), at(0, Some(4)));
    assert_eq!(
        lease.begin("cas", 0, 4).await.unwrap(),
        CursorWrite::Written,
        "a retry rewrites it"
    );
    assert_eq!(lease.advance("cas", 2, 4).await.unwrap(), CursorWrite::Moved);
    assert_eq!(lease.load("cas").await.unwrap(), at(0, Some(4)), "a refused write changes nothing");
    assert_eq!(lease.advance("cas", 0, 4).await.unwrap(), CursorWrite::Written);
    assert_eq!(lease.load("cas").await.unwrap(), at(4, None));
    assert_eq!(lease.begin("cas", 0, 6).await.unwrap(), CursorWrite::Moved, "never moved back");
    assert_eq!(lease.advance("cas", 0, 9).await.unwrap(), CursorWrite::Moved);
    assert_eq!(lease.load("cas").await.unwrap(), at(4, None));
    assert_eq!(lease.begin("missing-store", 0, 1).await.unwrap(), CursorWrite::Moved);
    assert_eq!(lease.load("missing-store").await.unwrap(), at(0, None));
    let page = lease.scan(0).await.unwrap();
    let cas = page.stores.iter().find(|store| store.store_id == "cas").expect("scanned");
    assert_eq!((cas.head, cas.cursor, cas.is_behind()), (10, at(4, None), true));
}

/// More stores than one page holds: the pages cover each exactly once, and the last one says so.
pub(super) async fn scan_pages(node: &Node) {
    let count = SCAN_PAGE_STORES + 50;
    let names: Vec<String> = (0..count).map(|index| format!("page-{index}")).collect();
    futures_util::future::join_all(names.iter().map(|name| node.append(name, 0, 1, 1))).await;
    let lease = node.cursors.acquire(SUBSCRIBER).await.unwrap().expect("nobody else holds it");
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after = 0;
    loop {
        let page = lease.scan(after).await.unwrap();
        pages += 1;
        assert!(page.stores.len() <= SCAN_PAGE_STORES);
        seen.extend(page.stores.into_iter().filter(|store| store.store_id.starts_with("page-")));
        match page.next_after {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(pages >= 2, "{pages} pages");
    let ids: BTreeSet<&str> = seen.iter().map(|store| store.store_id.as_str()).collect();
    assert_eq!((ids.len(), seen.len()), (count, count), "every store exactly once");
    assert!(seen.iter().all(|store| store.head == 1 && store.is_behind()));
}

/// Only one lease per subscriber exists across nodes; when its holder lets go, another node gets it.
pub(super) async fn one_lease_at_a_time(node_a: &Node, node_b: &Node) {
    let held = node_a.cursors.acquire("exclusive").await.unwrap().expect("free");
    assert!(node_b.cursors.acquire("exclusive").await.unwrap().is_none(), "held by node A");
    assert!(node_a.cursors.acquire("exclusive").await.unwrap().is_none(), "one session holds it");
    assert!(
        node_b.cursors.acquire("another").await.unwrap().is_some(),
        "leases are per subscriber"
    );
    let lost = held.lost();
    drop(held);
    assert!(lost.is_cancelled(), "a dropped lease counts as lost");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if node_b.cursors.acquire("exclusive").await.unwrap().is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node B never got the released lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh database in the test cluster (`LIVESTORE_TEST_DATABASE_URL`), or `None` after a note; with
/// `LIVESTORE_REQUIRE_POSTGRES` set, a missing cluster fails the test.
pub(super) struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    pub(super) async fn create() -> Option<PostgresDatabase> {
        let admin_url = match std::env::var("LIVESTORE_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var_os("LIVESTORE_REQUIRE_POSTGRES").is_none(),
                    "LIVESTORE_REQUIRE_POSTGRES is set but LIVESTORE_TEST_DATABASE_URL is not (scripts/with-postgres)"
                );
                eprintln!(
                    "NOTE: LIVESTORE_TEST_DATABASE_URL is not set: the Postgres cursor test did NOT run"
                );
                return None;
            }
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "livestore_cursors_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            rand::random::<u32>()
        );
        admin(&admin_url).await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        Some(PostgresDatabase { admin_url, name })
    }

    pub(super) fn config(&self) -> ServerConfig {
        ServerConfig {
            database_url: Some(DatabaseUrl(with_database(&self.admin_url, &self.name))),
            ..ServerConfig::default()
        }
    }

    pub(super) async fn drop_database(self) {
        let _ = admin(&self.admin_url)
            .await
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await;
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// `postgres://…/old?query` → `postgres://…/database?query`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) =
        url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let authority = base.find("://").map_or(0, |index| index + 3);
    let base = base[authority..].find('/').map_or(base, |slash| &base[..authority + slash]);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}
