//! A real LiveStore 0.4.0 client (`tests/js/driver.mjs`) whose pushes the push hook refuses: what it does, and that
//! the server's log never gets its events.

use std::time::Duration;

use serde_json::{Value, json};

use super::receiver::{Answer, Call, Receiver};
use super::{connect, server_log, start, users};
use crate::js_driver::{JsDriver, created};
use crate::support::*;

const CONVERGE: Duration = Duration::from_secs(30);

fn has_todo(todos: &Value, id: &str) -> bool {
    todos.as_array().unwrap().iter().any(|todo| todo["id"] == id)
}

/// The reader's push calls so far.
fn reader_pushes(receiver: &Receiver) -> Vec<Call> {
    receiver.calls("push").into_iter().filter(|call| call.body["subject"] == "reader").collect()
}

async fn wait_reader_pushes(receiver: &Receiver, count: usize) -> Vec<Call> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let calls = reader_pushes(receiver);
        if calls.len() >= count {
            return calls;
        }
        assert!(std::time::Instant::now() < deadline, "only {} refused pushes", calls.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What LiveStore 0.4.0 does with a refused push (`UnknownError`): it keeps the event pending and retries the push
/// with a growing delay, forever; its connection stays up and its pulls keep working, so it still sees (and rebases
/// onto) other clients' events. Nothing it pushes reaches the server's log.
#[tokio::test]
async fn a_livestore_client_whose_pushes_are_refused_retries_and_keeps_pulling() {
    let receiver = Receiver::start(|hook, body| match hook {
        "push" if body["subject"] == "reader" => Answer::deny("readers cannot write"),
        _ => users(hook, body),
    })
    .await;
    let (server, _dir) = start(&receiver, "", "", &[]);
    let mut driver = JsDriver::start().await;
    driver
        .open("reader", "js-hooks", &server.http_url(), json!({"syncPayload": {"user": "reader"}}))
        .await;
    let mut writer = connect(&server, "js-hooks", "writer").await;
    let written = |seq: u64, id: &str| {
        event(seq, "v1.TodoCreated", json!({"id": id, "text": "from the writer"}))
    };
    writer.send(&push_request("w1", "js-hooks", vec![written(1, "w1")], None)).await;
    assert_eq!(writer.frame().await["exit"]["_tag"], "Success");
    driver.wait_todos("reader", CONVERGE, |todos| has_todo(todos, "w1")).await;

    driver.commit("reader", json!([created("r1", "from the reader")])).await;
    let calls = wait_reader_pushes(&receiver, 4).await;
    let intervals: Vec<Duration> =
        calls.windows(2).map(|pair| pair[1].received.duration_since(pair[0].received)).collect();
    eprintln!("refused push retried after {intervals:?}");
    for call in &calls {
        let batch = call.body["batch"].as_array().unwrap();
        assert_eq!(batch.len(), 1, "{}", call.body);
        assert_eq!((&batch[0]["args"]["id"], &batch[0]["seqNum"]), (&json!("r1"), &json!(2)));
    }
    assert!(
        intervals.iter().all(|gap| *gap >= Duration::from_millis(500)),
        "no tight loop: {intervals:?}"
    );
    assert!(intervals[2] > intervals[0], "the delay grows: {intervals:?}");

    // Its pulls keep working while its push queue is stuck: it gets the writer's next event, rebases its pending
    // one onto it, and retries that.
    writer.send(&push_request("w2", "js-hooks", vec![written(2, "w2")], None)).await;
    let reply = loop {
        let frame = writer.frame().await;
        if frame["_tag"] == "Exit" {
            break frame;
        }
    };
    assert_eq!(reply["exit"]["_tag"], "Success", "{reply}");
    let todos = driver.wait_todos("reader", CONVERGE, |todos| has_todo(todos, "w2")).await;
    assert!(has_todo(&todos, "r1"), "the refused event stays in the reader's own state: {todos}");
    let state = driver.sync_state("reader").await;
    assert_eq!((&state["pending"], &state["isConnected"]), (&json!(1), &json!(true)), "{state}");
    let seen = reader_pushes(&receiver).len();
    let rebased = wait_reader_pushes(&receiver, seen + 1).await;
    let batch = &rebased.last().unwrap().body["batch"];
    assert_eq!(
        (&batch[0]["args"]["id"], &batch[0]["seqNum"]),
        (&json!("r1"), &json!(3)),
        "{batch}"
    );
    assert_eq!(driver.sync_state("reader").await["shutdown"], false, "the store keeps running");

    let log = server_log(&server, "js-hooks").await;
    let ids: Vec<&Value> = log.iter().map(|(_, args)| &args["id"]).collect();
    assert_eq!(ids, [&json!("w1"), &json!("w2")], "the reader's event was never written");
    driver.exit().await;
}
