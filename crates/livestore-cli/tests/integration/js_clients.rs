//! Real `@livestore/*` 0.4.0 Node clients (TodoMVC schema, `makeWsSync` / `makeHttpSync`) syncing through the
//! real server: convergence, offline rebase, restarts, pagination, large events, HTTP, auth, isolation.

use std::time::Duration;

use serde_json::{Value, json};

use crate::js_driver::{JsDriver, created};
use crate::support::*;

const CONVERGE: Duration = Duration::from_secs(30);

fn ids(todos: &Value) -> Vec<String> {
    todos.as_array().unwrap().iter().map(|todo| todo["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn two_clients_converge_and_a_second_store_is_isolated() {
    let server = TestServer::start();
    let url = server.http_url();
    let mut driver = JsDriver::start().await;
    driver.open("a", "shared", &url, json!({})).await;
    driver.open("b", "shared", &url, json!({})).await;
    driver.open("other", "elsewhere", &url, json!({})).await;
    driver.commit("a", json!([created("t1", "one"), created("t2", "two")])).await;
    driver.commit("b", json!([created("t3", "three")])).await;
    // Completing t3 only means something once A has seen it: events apply in log order.
    driver
        .wait_todos("a", CONVERGE, |todos| {
            todos.as_array().unwrap().iter().any(|t| t["id"] == "t3")
        })
        .await;
    driver.commit("a", json!([{"name": "v1.TodoCompleted", "args": {"id": "t3"}}])).await;
    driver
        .wait_todos("b", CONVERGE, |todos| {
            todos.as_array().unwrap().iter().any(|t| t["id"] == "t3" && t["completed"] == true)
        })
        .await;
    driver.wait_synced("a").await;
    driver.wait_synced("b").await;
    let a = driver.wait_todos("a", CONVERGE, |todos| todos.as_array().unwrap().len() == 3).await;
    assert_eq!(a, driver.todos("b").await);
    assert_eq!(driver.eventlog("a").await, driver.eventlog("b").await);
    assert_eq!(driver.eventlog("a").await.as_array().unwrap().len(), 4);
    assert_eq!(driver.todos("other").await, json!([]));
    driver.exit().await;
}

/// Both clients commit while the server is down, then the server comes back: one of them rebases, both end with
/// one identical ordered log; fs storage survives, backendId survives, nothing is pushed twice.
#[tokio::test]
async fn offline_commits_rebase_and_converge_across_a_server_restart() {
    let mut server = TestServer::start();
    let url = server.http_url();
    let temp = tempfile::tempdir().unwrap();
    let mut driver = JsDriver::start().await;
    for name in ["a", "b"] {
        let dir = temp.path().join(name);
        driver.open(name, "offline", &url, json!({"storage": "fs", "dir": dir})).await;
    }
    driver.commit("a", json!([created("a0", "before")])).await;
    driver.wait_head("b", 1).await;
    let backend_before = server_backend_id(&server, "offline").await;

    server.stop();
    driver.commit("a", json!([created("a1", "offline a"), created("a2", "offline a")])).await;
    driver.commit("b", json!([created("b1", "offline b")])).await;
    driver.commit("a", json!([{"name": "v1.TodoCompleted", "args": {"id": "b1"}}])).await;
    // One client also restarts its process while offline: its pending events come from disk.
    driver.shutdown("b").await;
    driver.open("b", "offline", &url, json!({"storage": "fs", "dir": temp.path().join("b")})).await;
    server.spawn();

    driver.wait_head("a", 5).await;
    driver.wait_head("b", 5).await;
    driver.wait_synced("a").await;
    driver.wait_synced("b").await;
    let log_a = driver.eventlog("a").await;
    let log_b = driver.eventlog("b").await;
    assert_eq!(log_a, log_b);
    assert_eq!(log_a.as_array().unwrap().len(), 5, "{log_a}");
    for (index, event) in log_a.as_array().unwrap().iter().enumerate() {
        assert_eq!(event["seqNum"], json!(index + 1));
        assert_eq!(event["parentSeqNum"], json!(index));
    }
    let todos =
        driver.wait_todos("a", CONVERGE, |todos| todos.as_array().unwrap().len() == 4).await;
    assert_eq!(
        driver.wait_todos("b", CONVERGE, |todos| todos.as_array().unwrap().len() == 4).await,
        todos
    );
    assert_eq!(ids(&todos), ["a0", "a1", "a2", "b1"]);
    assert_eq!(server_backend_id(&server, "offline").await, backend_before);
    // The server's log is exactly the clients' log: nothing duplicated by re-pushes after the rebase.
    assert_eq!(server_seq_nums(&server, "offline").await, (1..=5).collect::<Vec<u64>>());
    driver.exit().await;
}

#[tokio::test]
async fn a_fresh_client_pulls_a_1000_event_backlog_and_100_kb_events() {
    let server = TestServer::start();
    let mut pusher = WsClient::connect(&server.ws_url("backlog")).await;
    push_events(&mut pusher, "backlog", 0, 1_000, 100).await;
    let big = "x".repeat(100 * 1024);
    let big_events: Vec<Value> = (1001..=1003)
        .map(|seq| event(seq, "v1.TodoCreated", json!({"id": format!("big{seq}"), "text": big})))
        .collect();
    pusher.send(&push_request("big", "backlog", big_events, None)).await;
    assert_eq!(pusher.frame().await["exit"]["_tag"], "Success");

    let mut driver = JsDriver::start().await;
    driver.open("fresh", "backlog", &server.http_url(), json!({})).await;
    driver.wait_head("fresh", 1_003).await;
    let todos = driver
        .wait_todos("fresh", CONVERGE, |todos| todos.as_array().unwrap().len() == 1_003)
        .await;
    let big_todo = todos.as_array().unwrap().iter().find(|todo| todo["id"] == "big1002").unwrap();
    assert_eq!(big_todo["text"].as_str().unwrap().len(), 100 * 1024);
    // The JS client can push a 100 KB event too, and another client receives it.
    driver.commit("fresh", json!([created("from-js", &"y".repeat(100 * 1024))])).await;
    driver.wait_synced("fresh").await;
    assert_eq!(server_seq_nums(&server, "backlog").await.len(), 1_004);
    driver.exit().await;
}

#[tokio::test]
async fn http_transport_clients_sync_with_websocket_clients() {
    let server = TestServer::start();
    let url = server.http_url();
    let mut driver = JsDriver::start().await;
    driver.open("ws", "mixed", &url, json!({})).await;
    driver.open("http", "mixed", &url, json!({"transport": "http", "httpPollMs": 300})).await;
    driver.commit("ws", json!([created("w1", "over ws")])).await;
    driver.commit("http", json!([created("h1", "over http")])).await;
    let expected = |todos: &Value| todos.as_array().unwrap().len() == 2;
    let over_ws = driver.wait_todos("ws", CONVERGE, expected).await;
    let over_http = driver.wait_todos("http", CONVERGE, expected).await;
    assert_eq!(over_ws, over_http);
    driver.wait_synced("http").await;
    assert_eq!(driver.eventlog("ws").await, driver.eventlog("http").await);
    driver.exit().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_the_right_one_syncs() {
    let server = TestServer::start_with_env(&[(
        "LIVESTORE_AUTH_TOKENS",
        "right-token-0123456789abcdefghijkl",
    )]);
    let url = server.http_url();
    let mut driver = JsDriver::start().await;
    driver
        .open("good", "secured", &url, json!({"token": "right-token-0123456789abcdefghijkl"}))
        .await;
    driver.open("bad", "secured", &url, json!({"token": "wrong-token-5678"})).await;
    driver.commit("good", json!([created("g1", "good")])).await;
    driver.commit("bad", json!([created("b1", "bad")])).await;
    driver.wait_synced("good").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bad_state = driver.sync_state("bad").await;
    assert_eq!(bad_state["pending"], 1, "{bad_state}");
    assert_eq!(bad_state["isConnected"], false, "{bad_state}");
    assert_eq!(ids(&driver.todos("good").await), ["g1"]);
    let authorized = format!(
        "{}&payload=%257B%2522authToken%2522%253A%2522right-token-0123456789abcdefghijkl%2522%257D",
        server.ws_url("secured")
    );
    let mut client = WsClient::connect(&authorized).await;
    let mut pull = pull_request("0", "secured", false, None);
    pull["payload"]["payload"] = json!({"authToken": "right-token-0123456789abcdefghijkl"});
    client.send(&pull).await;
    assert_eq!(chunk_seq_nums(&client.frame().await).0, [1]);
    assert!(server.log().contains("refused WebSocket connection"));
    assert!(
        !server.log().contains("wrong-token-5678")
            && !server.log().contains("right-token-0123456789abcdefghijkl")
    );
    driver.exit().await;
}

async fn pull_all(server: &TestServer, store: &str) -> (String, Vec<u64>) {
    let mut client = WsClient::connect(&server.ws_url(store)).await;
    client.send(&pull_request("0", store, false, None)).await;
    let mut seqs = Vec::new();
    let mut backend = String::new();
    loop {
        let frame = client.frame().await;
        if frame["_tag"] == "Exit" {
            return (backend, seqs);
        }
        backend = backend_id_of(&frame);
        seqs.extend(chunk_seq_nums(&frame).0);
    }
}

async fn server_seq_nums(server: &TestServer, store: &str) -> Vec<u64> {
    pull_all(server, store).await.1
}

async fn server_backend_id(server: &TestServer, store: &str) -> String {
    pull_all(server, store).await.0
}
