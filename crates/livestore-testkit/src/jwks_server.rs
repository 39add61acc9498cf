//! A JWKS endpoint on `127.0.0.1` that a test controls: what it answers (a document with or without
//! `Cache-Control`, an error status, any body), how slowly, whether it listens at all, and how often it was asked.
//!
//! It runs on a thread with its own runtime, so a test that blocks its own thread (waiting for a server process to
//! start, say) does not stall the identity provider the server is talking to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{oneshot, watch};

/// What the endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksReply {
    /// 200 with this JSON body and, if given, this `Cache-Control` header.
    Document {
        /// The body.
        body: String,
        /// The `Cache-Control` value.
        cache_control: Option<String>,
    },
    /// This status with a short text body.
    Status(u16),
}

impl JwksReply {
    /// 200 with `body` and no `Cache-Control`.
    pub fn document(body: impl Into<String>) -> JwksReply {
        JwksReply::Document { body: body.into(), cache_control: None }
    }
}

#[derive(Debug)]
struct Behaviour {
    reply: JwksReply,
    delay: Duration,
}

#[derive(Debug)]
struct Shared {
    behaviour: Mutex<Behaviour>,
    fetches: watch::Sender<usize>,
}

impl Shared {
    fn behaviour(&self) -> MutexGuard<'_, Behaviour> {
        self.behaviour.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running (or stopped) JWKS endpoint; it stops when dropped.
#[derive(Debug)]
pub struct JwksServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<(std::thread::JoinHandle<()>, oneshot::Sender<()>)>,
}

impl JwksServer {
    /// Starts listening on a free loopback port, answering `reply`.
    pub fn start(reply: JwksReply) -> JwksServer {
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour { reply, delay: Duration::ZERO }),
            fetches: watch::Sender::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port is free");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let mut server = JwksServer { addr, shared, running: None };
        server.listen(listener);
        server
    }

    /// The document's URL.
    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Answers `reply` from now on.
    pub fn set_reply(&self, reply: JwksReply) {
        self.shared.behaviour().reply = reply;
    }

    /// Waits this long before answering each request (the request counts as a fetch when it arrives).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.behaviour().delay = delay;
    }

    /// Requests received so far.
    pub fn fetches(&self) -> usize {
        *self.shared.fetches.borrow()
    }

    /// Waits until at least `count` requests arrived; panics after `timeout`.
    pub async fn wait_for_fetches(&self, count: usize, timeout: Duration) {
        let mut fetches = self.shared.fetches.subscribe();
        let reached = tokio::time::timeout(timeout, fetches.wait_for(|seen| *seen >= count)).await;
        assert!(
            reached.is_ok(),
            "the JWKS endpoint saw {} fetches, not {count}, within {timeout:?}",
            self.fetches()
        );
    }

    /// Stops listening and drops every open connection: fetches now fail to connect.
    pub fn stop(&mut self) {
        if let Some((thread, stop)) = self.running.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let socket = socket_reusing_address(self.addr);
        self.listen(socket);
    }

    fn listen(&mut self, listener: std::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = self.shared.clone();
        listener.set_nonblocking(true).expect("a listener can be made non-blocking");
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime starts");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("a std listener converts to tokio");
                let app = axum::Router::new().fallback(move || answer(shared.clone()));
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here drops every connection task, closing their sockets.
        });
        self.running = Some((thread, stop));
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(shared: Arc<Shared>) -> Response {
    shared.fetches.send_modify(|count| *count += 1);
    let (reply, delay) = {
        let behaviour = shared.behaviour();
        (behaviour.reply.clone(), behaviour.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match reply {
        JwksReply::Document { body, cache_control } => {
            let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            if let Some(value) = cache_control.and_then(|value| HeaderValue::try_from(value).ok()) {
                response.headers_mut().insert(header::CACHE_CONTROL, value);
            }
            response
        }
        JwksReply::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "the identity provider is having a bad day").into_response()
        }
    }
}

/// A listener on `addr` that binds even while connections to the previous listener linger in TIME_WAIT.
fn socket_reusing_address(addr: SocketAddr) -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket opens");
    socket.set_reuse_address(true).expect("SO_REUSEADDR can be set");
    socket.bind(&addr.into()).expect("the JWKS port is free again");
    socket.listen(64).expect("the socket listens");
    socket.into()
}
