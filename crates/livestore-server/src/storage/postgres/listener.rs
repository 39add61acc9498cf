//! The node's ear on the database: one connection that `LISTEN`s for commits of every node and doubles as the
//! health check.
//!
//! While it is connected and answers its heartbeat, the node is available and every notification
//! (`<store_key>:<head>`) raises that store's publisher target. When the connection fails or the heartbeat goes
//! unanswered, notifications may have been missed, so the node closes every store and refuses sync traffic
//! (`Registry::set_unavailable`) and reconnects with backoff; once `LISTEN` is back in place it serves again and
//! stores are reopened from the database on demand.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::publisher::Registry;
use super::{CHANNEL, Shared};

/// How often the listening connection is checked.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a heartbeat may take before the database counts as lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection backoff bounds.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Listens until `stop`; `ready` fires the first time the node becomes available.
pub(super) async fn run(
    config: Arc<tokio_postgres::Config>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut delay = RECONNECT_MIN;
    let mut outage_logged = false;
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = listen(&config) => attempt,
        };
        match attempt {
            Ok((client, mut notifications, connection_task)) => {
                delay = RECONNECT_MIN;
                outage_logged = false;
                // Stores are reopened from the database from here on; whatever was published before the outage is
                // gone with the hubs `set_unavailable` closed.
                shared.directory.lock().expect("store directory lock poisoned").clear();
                shared.registry.set_available();
                // Commits made while nobody listened were never announced: the delivery scans for them.
                shared.commits.missed();
                tracing::info!(target: "livestore_server::_events::database_available", "listening for commits; serving");
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                let stopped = serve(&shared, &client, &mut notifications, &stop).await;
                connection_task.abort();
                if stopped {
                    return;
                }
                shared.metrics.database_outages.inc();
                shared.registry.set_unavailable();
            }
            Err(error) => {
                if !outage_logged {
                    tracing::warn!(%error, "cannot listen on the database; retrying");
                    outage_logged = true;
                } else {
                    tracing::debug!(%error, "cannot listen on the database; retrying");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {},
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

type Listening =
    (tokio_postgres::Client, mpsc::UnboundedReceiver<String>, tokio::task::JoinHandle<()>);

/// Connects and subscribes; notifications arrive on the returned channel, which closes with the connection.
async fn listen(config: &tokio_postgres::Config) -> Result<Listening, tokio_postgres::Error> {
    // Named apart in pg_stat_activity, so operators (and tests) can tell the listening connection from the others.
    let mut config = config.clone();
    let name = format!("{}-listener", config.get_application_name().unwrap_or("livestore"));
    config.application_name(name);
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let connection_task = tokio::spawn(async move {
        let mut messages =
            futures_util::stream::poll_fn(move |context| connection.poll_message(context));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if sender.send(notification.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "the listening database connection failed");
                    return;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, receiver, connection_task))
}

/// Dispatches notifications until the connection fails (false) or the storage stops (true).
async fn serve(
    shared: &Arc<Shared>,
    client: &tokio_postgres::Client,
    notifications: &mut mpsc::UnboundedReceiver<String>,
    stop: &CancellationToken,
) -> bool {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return true,
            payload = notifications.recv() => match payload {
                Some(payload) => match parse_payload(&payload) {
                    Some((store_key, head)) => {
                        Registry::notified(shared, store_key, head);
                        shared.announce(store_key, head);
                    }
                    None => tracing::warn!(payload, "ignoring a malformed notification"),
                },
                None => return false,
            },
            _ = heartbeat.tick() => {
                let answered = tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("SELECT 1")).await;
                if !matches!(answered, Ok(Ok(_))) {
                    tracing::warn!("the database did not answer the heartbeat");
                    return false;
                }
            }
        }
    }
}

/// `<store_key>:<head>`.
fn parse_payload(payload: &str) -> Option<(i64, u64)> {
    let (store_key, head) = payload.split_once(':')?;
    Some((store_key.parse().ok()?, head.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads_parse_or_are_refused() {
        assert_eq!(super::parse_payload("12:3456"), Some((12, 3456)));
        assert_eq!(super::parse_payload("12"), None);
        assert_eq!(super::parse_payload("x:1"), None);
    }
}
