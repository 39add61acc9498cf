//! Accepting TCP connections and serving the router on each (HTTP/1.1 with WebSocket upgrades).
//!
//! This is `axum::serve` (HTTP/1 only, as axum is built here) with graceful shutdown, plus the timeout
//! `axum::serve` does not set. Without it a client could hold a connection, its task and its buffers forever: by
//! connecting and sending nothing, by sending request headers a byte at a time (slowloris), or by idling between
//! keep-alive requests. Here:
//! - request headers must be complete within `header_read_timeout` of hyper starting to read them: from the
//!   connection's start for the first request, from the previous response for the next, so a connection that
//!   sends nothing or idles between keep-alive requests that long is closed too;
//! - every connection gets TCP_NODELAY, so small frames (Pong, acks, one-event pages) leave at once instead of
//!   waiting up to 40 ms for the client's delayed ACK;
//! - every socket is a [`GuardedIo`]: a client that leaves a response unread for the write timeout is closed, and an
//!   upgraded WebSocket must complete each message it starts within the message timeout (`guarded_io`);
//! - every request carries its connection's [`ConnectionWatch`] and the peer address (`ConnectInfo`) as extensions.
//!
//! Upgraded WebSockets are not affected: an idle live pull is normal, and `ws` bounds slow readers itself.
//!
//! At shutdown, open requests get `shutdown_grace` to finish; connections still busy then are closed. Without that
//! bound one client that stopped sending in the middle of a request body (or reading a response) kept the process
//! from exiting on SIGTERM for as long as it held its socket.

mod guarded_io;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use self::guarded_io::GuardedIo;
pub(crate) use self::guarded_io::{ConnectionWatch, IoFailure};
use crate::budget::MemoryBudget;
use crate::metrics::Metrics;

/// What every connection is held to.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) header_read_timeout: Duration,
    pub(crate) message_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets open requests finish for up
/// to `shutdown_grace`, closes the connections still open after that, and returns once every connection has
/// closed. (WebSocket sessions are tracked and closed by the caller.)
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    shutdown_grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    // Every connection task holds a receiver; waiting for `closed()` waits for all of them.
    let (close_tx, close_rx) = watch::channel(());
    // Set when the grace period is over: connections still open drop their sockets.
    let (force_tx, force_rx) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    handle_accept_error(error).await;
                    continue;
                }
            },
            () = signal_tx.closed() => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let watch = Arc::new(ConnectionWatch::new(
            settings.message_timeout,
            settings.write_timeout,
            settings.budget.clone(),
            settings.metrics.clone(),
        ));
        let accepted = Accepted {
            stream: GuardedIo::new(stream, watch.clone()),
            open: OpenConnection::new(settings.metrics.clone()),
            watch,
            peer,
        };
        tokio::spawn(serve_connection(
            accepted,
            router.clone(),
            builder.clone(),
            signal_tx.clone(),
            close_rx.clone(),
            force_rx.clone(),
        ));
    }
    drop(close_rx);
    drop(listener);
    if tokio::time::timeout(shutdown_grace, close_tx.closed()).await.is_err() {
        tracing::warn!(
            "closing HTTP connections whose requests did not finish within {shutdown_grace:?}"
        );
        let _ = force_tx.send(true);
        close_tx.closed().await;
    }
    Ok(())
}

/// Counts an open connection in `livestore_http_connections` until dropped (or upgraded: hyper then hands the
/// socket to the WebSocket session and this connection's task ends).
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.http_connections.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.http_connections.dec();
    }
}

/// One accepted connection: its guarded socket, its place in the connection gauge, its watchdogs, its peer.
struct Accepted {
    stream: GuardedIo<TcpStream>,
    open: OpenConnection,
    watch: Arc<ConnectionWatch>,
    peer: SocketAddr,
}

async fn serve_connection(
    Accepted { stream, open, watch, peer }: Accepted,
    router: Router,
    builder: http1::Builder,
    signal_tx: watch::Sender<()>,
    close_rx: watch::Receiver<()>,
    mut force_rx: watch::Receiver<bool>,
) {
    let service =
        TowerToHyperService::new(router.map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(watch.clone());
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            request.map(Body::new)
        }));
    let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(connection);
    let signal_closed = signal_tx.closed();
    tokio::pin!(signal_closed);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    if error.is_timeout() {
                        open.0.limit_hit(crate::metrics::LimitHit::HeaderTimeout);
                    }
                    tracing::trace!(%error, "connection ended with an error");
                }
                break;
            }
            () = &mut signal_closed, if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
            // Dropping the connection closes its socket; a closed channel means `serve` is gone, so stop too.
            _ = force_rx.wait_for(|force| *force) => break,
        }
    }
    drop(close_rx);
}

/// Errors that only concern one connection are skipped; others (out of file descriptors) pause accepting briefly
/// instead of spinning.
async fn handle_accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
