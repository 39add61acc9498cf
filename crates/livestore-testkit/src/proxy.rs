//! The fault-injecting TCP proxy.
//!
//! Every accepted connection gets its own upstream connection to the target and two pumps (client → target and
//! target → client). A pump is a reader that timestamps each chunk and a writer that delivers it no earlier than
//! `read time + delay`, so latency does not throttle throughput. Faults are read from one `watch` channel, so a
//! change made by the test reaches live connections at once:
//!
//! - **delay / jitter**: each chunk waits `delay + fraction × jitter`, where `fraction` is drawn once per connection
//!   from the proxy's seeded RNG; connections therefore get different latencies, which reorders traffic across
//!   connections (never within one: TCP stays a byte stream).
//! - **stall**: writers stop delivering; readers stop once their small queue is full, so TCP backpressure reaches
//!   the sender. Nothing is closed or lost: when the stall ends, the queued bytes flow. This is a network partition
//!   that heals.
//! - **cut**: both sockets are closed at once, by default with a TCP reset; optionally only after N more bytes,
//!   which cuts in the middle of whatever frame is on the wire.
//! - **blackhole**: new connections are accepted but never connected upstream and never answered.
//! - **refuse**: new connections are reset as soon as they are accepted.
//! - **lifetime**: connections older than a limit are cut, so clients keep reconnecting (connection recycling).
//!
//! The proxy never parses bytes. It does not simulate packet loss inside a connection: TCP would retransmit, which
//! is exactly what a stall followed by a resume looks like to the endpoints.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a cut connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CutStyle {
    /// A TCP reset on both sides: peers see "connection reset", unsent data is discarded. Like a crashed middlebox.
    #[default]
    Reset,
    /// An orderly close (FIN) on both sides: peers see the end of the stream. Like a proxy that times out.
    Close,
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted (including blackholed and refused ones).
    pub connections_accepted: u64,
    /// Connections that got no upstream connection because the blackhole was on.
    pub connections_blackholed: u64,
    /// Connections reset on accept because refusal was on.
    pub connections_refused: u64,
    /// Connections closed by a fault: an explicit cut, a byte limit or a lifetime limit.
    pub connections_cut: u64,
    /// Connections whose upstream connect failed (the target was down).
    pub upstream_connect_failures: u64,
    /// Bytes delivered from clients to the target.
    pub bytes_upstream: u64,
    /// Bytes delivered from the target to clients.
    pub bytes_downstream: u64,
    /// Fault injections requested through the API (each call that turns a fault on or cuts connections counts once).
    pub faults_injected: u64,
}

#[derive(Debug, Clone, Default)]
struct Faults {
    delay: Duration,
    jitter: Duration,
    stalled: bool,
    blackhole: bool,
    refuse: bool,
    max_lifetime: Option<Duration>,
    new_connection_byte_limit: Option<u64>,
    cut_style: CutStyle,
}

#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_blackholed: AtomicU64,
    connections_refused: AtomicU64,
    connections_cut: AtomicU64,
    upstream_connect_failures: AtomicU64,
    bytes_upstream: AtomicU64,
    bytes_downstream: AtomicU64,
    faults_injected: AtomicU64,
}

/// What the proxy keeps about one live connection.
struct ConnectionHandle {
    cut: CancellationToken,
    /// Bytes (both directions together) still allowed before the connection is cut; `u64::MAX` is unlimited.
    byte_budget: Arc<AtomicU64>,
}

struct Shared {
    target: SocketAddr,
    faults: watch::Sender<Faults>,
    connections: Mutex<HashMap<u64, ConnectionHandle>>,
    counters: Counters,
    rng: Mutex<StdRng>,
    /// Cancelled when the proxy is dropped: every connection closes.
    root: CancellationToken,
}

/// A TCP proxy on `127.0.0.1:0` in front of `target`, with faults switchable at runtime.
///
/// Dropping the proxy stops accepting and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.shared.target)
            .field("faults", &*self.shared.faults.borrow())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy to `target` with no faults and RNG seed 0.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        Self::start_seeded(target, 0).await
    }

    /// Starts a proxy whose per-connection jitter is drawn from an RNG seeded with `seed`.
    pub async fn start_seeded(target: SocketAddr, seed: u64) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            faults: watch::Sender::new(Faults::default()),
            connections: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            root: CancellationToken::new(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultProxy { addr, shared, accept_task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for clients that take a base URL.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Latency added to every chunk in both directions (live connections included).
    pub fn set_delay(&self, delay: Duration) {
        self.count_fault(!delay.is_zero());
        self.shared.faults.send_modify(|faults| faults.delay = delay);
    }

    /// Extra latency of up to `jitter`, a fixed fraction of it per connection (seeded), which reorders traffic
    /// across connections.
    pub fn set_jitter(&self, jitter: Duration) {
        self.count_fault(!jitter.is_zero());
        self.shared.faults.send_modify(|faults| faults.jitter = jitter);
    }

    /// Stops forwarding on every connection (live and new) without closing anything, until [`Self::resume`].
    pub fn stall(&self) {
        self.count_fault(true);
        self.shared.faults.send_modify(|faults| faults.stalled = true);
    }

    /// Ends a stall: queued bytes flow again.
    pub fn resume(&self) {
        self.shared.faults.send_modify(|faults| faults.stalled = false);
    }

    /// New connections are accepted but never answered (existing ones are untouched), until turned off.
    pub fn set_blackhole(&self, on: bool) {
        self.count_fault(on);
        self.shared.faults.send_modify(|faults| faults.blackhole = on);
    }

    /// New connections are reset as soon as they are accepted, until turned off.
    pub fn set_refuse(&self, on: bool) {
        self.count_fault(on);
        self.shared.faults.send_modify(|faults| faults.refuse = on);
    }

    /// Cuts every connection once it is older than `lifetime` (`None`: no limit).
    pub fn set_max_lifetime(&self, lifetime: Option<Duration>) {
        self.count_fault(lifetime.is_some());
        self.shared.faults.send_modify(|faults| faults.max_lifetime = lifetime);
    }

    /// Every connection accepted from now on is cut after forwarding `limit` bytes (both directions together).
    pub fn set_new_connection_byte_limit(&self, limit: Option<u64>) {
        self.count_fault(limit.is_some());
        self.shared.faults.send_modify(|faults| faults.new_connection_byte_limit = limit);
    }

    /// Whether cuts reset (default) or close.
    pub fn set_cut_style(&self, style: CutStyle) {
        self.shared.faults.send_modify(|faults| faults.cut_style = style);
    }

    /// Removes every fault (delay, jitter, stall, blackhole, refusal, limits); live connections keep running.
    pub fn heal(&self) {
        self.shared.faults.send_modify(|faults| {
            let cut_style = faults.cut_style;
            *faults = Faults { cut_style, ..Faults::default() };
        });
    }

    /// Cuts every live connection now; returns how many there were.
    pub fn cut_all(&self) -> usize {
        self.count_fault(true);
        let connections = self.shared.connections.lock().expect("connection map lock");
        for connection in connections.values() {
            connection.cut.cancel();
        }
        connections.len()
    }

    /// Lets every live connection forward `bytes` more bytes (both directions together), then cuts it mid-stream.
    /// Returns how many connections were armed.
    pub fn cut_all_after_bytes(&self, bytes: u64) -> usize {
        self.count_fault(true);
        let connections = self.shared.connections.lock().expect("connection map lock");
        for connection in connections.values() {
            connection.byte_budget.store(bytes, Ordering::SeqCst);
            if bytes == 0 {
                connection.cut.cancel();
            }
        }
        connections.len()
    }

    /// Connections currently open through the proxy (blackholed ones included).
    pub fn open_connections(&self) -> usize {
        self.shared.connections.lock().expect("connection map lock").len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let counters = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        ProxyStats {
            connections_accepted: load(&counters.connections_accepted),
            connections_blackholed: load(&counters.connections_blackholed),
            connections_refused: load(&counters.connections_refused),
            connections_cut: load(&counters.connections_cut),
            upstream_connect_failures: load(&counters.upstream_connect_failures),
            bytes_upstream: load(&counters.bytes_upstream),
            bytes_downstream: load(&counters.bytes_downstream),
            faults_injected: load(&counters.faults_injected),
        }
    }

    fn count_fault(&self, injected: bool) {
        if injected {
            self.shared.counters.faults_injected.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.shared.root.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        let client = tokio::select! {
            () = shared.root.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                // Out of file descriptors and similar: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        shared.counters.connections_accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve_connection(Arc::clone(&shared), client, next_id));
    }
}

async fn serve_connection(shared: Arc<Shared>, client: TcpStream, id: u64) {
    let faults = shared.faults.borrow().clone();
    if faults.refuse {
        shared.counters.connections_refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_zero_linger();
        return;
    }
    let cut = shared.root.child_token();
    let byte_budget =
        Arc::new(AtomicU64::new(faults.new_connection_byte_limit.unwrap_or(u64::MAX)));
    shared
        .connections
        .lock()
        .expect("connection map lock")
        .insert(id, ConnectionHandle { cut: cut.clone(), byte_budget: Arc::clone(&byte_budget) });
    let opened = Instant::now();
    if faults.blackhole {
        shared.counters.connections_blackholed.fetch_add(1, Ordering::SeqCst);
        // Hold the socket without reading: the client's request sits unanswered in the kernel buffer.
        cut.cancelled().await;
        if !shared.root.is_cancelled() {
            finish_cut(&shared, &[&client]);
        }
        shared.connections.lock().expect("connection map lock").remove(&id);
        return;
    }
    let upstream = tokio::select! {
        () = cut.cancelled() => None,
        connected = TcpStream::connect(shared.target) => connected.ok(),
    };
    let Some(upstream) = upstream else {
        if !cut.is_cancelled() {
            shared.counters.upstream_connect_failures.fetch_add(1, Ordering::SeqCst);
        }
        let _ = client.set_zero_linger();
        shared.connections.lock().expect("connection map lock").remove(&id);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let jitter_fraction: f64 = shared.rng.lock().expect("rng lock").random();
    // `done` ends the pumps; a fault cancels `cut` (and with it `done`), a vanished peer only `done`.
    let done = cut.child_token();
    let connection = Connection {
        shared: &shared,
        cut: &cut,
        done: &done,
        byte_budget: &byte_budget,
        jitter_fraction,
    };
    let pumps = async {
        tokio::join!(
            connection.pump(&client, &upstream, &shared.counters.bytes_upstream),
            connection.pump(&upstream, &client, &shared.counters.bytes_downstream),
        )
    };
    tokio::select! {
        _ = pumps => {}
        () = connection.enforce_lifetime(opened) => {}
    }
    if cut.is_cancelled() && !shared.root.is_cancelled() {
        finish_cut(&shared, &[&client, &upstream]);
    }
    shared.connections.lock().expect("connection map lock").remove(&id);
}

/// Closes sockets of a cut connection the configured way and counts the cut.
fn finish_cut(shared: &Shared, sockets: &[&TcpStream]) {
    shared.counters.connections_cut.fetch_add(1, Ordering::SeqCst);
    let style = shared.faults.borrow().cut_style;
    for socket in sockets {
        match style {
            CutStyle::Reset => {
                let _ = socket.set_zero_linger();
            }
            CutStyle::Close => {
                let _ = socket2::SockRef::from(*socket).shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

struct Connection<'a> {
    shared: &'a Shared,
    /// Cancelled by a fault.
    cut: &'a CancellationToken,
    /// Cancelled when the connection must end for any reason.
    done: &'a CancellationToken,
    byte_budget: &'a AtomicU64,
    jitter_fraction: f64,
}

impl Connection<'_> {
    /// Moves bytes from `from` to `to` until end of stream or a cut, honouring delay, stall and the byte budget.
    async fn pump(&self, from: &TcpStream, to: &TcpStream, delivered: &AtomicU64) {
        // A small queue: during a stall the reader stops soon and TCP pushes back on the sender.
        let (chunks, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(8);
        let read = async move {
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let read = tokio::select! {
                    () = self.done.cancelled() => return,
                    read = read_some(from, &mut buffer) => read,
                };
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(count) => {
                        if chunks.send((Instant::now(), buffer[..count].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let write = async {
            loop {
                let next = tokio::select! {
                    () = self.done.cancelled() => return,
                    next = queued.recv() => next,
                };
                let Some((read_at, chunk)) = next else { break };
                if !self.wait_for_delivery(read_at).await {
                    return;
                }
                let allowed = self.take_budget(chunk.len());
                let written = tokio::select! {
                    () = self.done.cancelled() => return,
                    written = write_all(to, &chunk[..allowed]) => written,
                };
                if written.is_err() {
                    // The receiving side is gone; end the whole connection.
                    self.cut_quietly();
                    return;
                }
                delivered.fetch_add(allowed as u64, Ordering::SeqCst);
                if self.byte_budget.load(Ordering::SeqCst) == 0 {
                    self.cut.cancel();
                    return;
                }
            }
            // End of stream from the sender: pass it on as a half-close, the other direction keeps flowing.
            let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
        };
        tokio::join!(read, write);
    }

    /// Waits until a chunk read at `read_at` may be delivered (delay passed, no stall); false when cut meanwhile.
    async fn wait_for_delivery(&self, read_at: Instant) -> bool {
        let mut faults = self.shared.faults.subscribe();
        loop {
            let (stalled, deliver_at) = {
                let current = faults.borrow_and_update();
                (
                    current.stalled,
                    read_at + current.delay + current.jitter.mul_f64(self.jitter_fraction),
                )
            };
            if !stalled && Instant::now() >= deliver_at {
                return true;
            }
            tokio::select! {
                () = self.done.cancelled() => return false,
                changed = faults.changed() => if changed.is_err() { return false },
                () = tokio::time::sleep_until(deliver_at), if !stalled => {}
            }
        }
    }

    /// Takes up to `wanted` bytes from the budget; returns how many may be written.
    fn take_budget(&self, wanted: usize) -> usize {
        let wanted = wanted as u64;
        let mut current = self.byte_budget.load(Ordering::SeqCst);
        loop {
            if current == u64::MAX {
                return wanted as usize;
            }
            let allowed = current.min(wanted);
            match self.byte_budget.compare_exchange(
                current,
                current - allowed,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return allowed as usize,
                Err(actual) => current = actual,
            }
        }
    }

    /// Ends the connection because a peer went away: not a fault, so not counted as a cut.
    fn cut_quietly(&self) {
        self.done.cancel();
    }

    /// Cuts the connection when it outlives the configured maximum lifetime; never returns otherwise.
    async fn enforce_lifetime(&self, opened: Instant) {
        let mut faults = self.shared.faults.subscribe();
        loop {
            let deadline =
                faults.borrow_and_update().max_lifetime.map(|lifetime| opened + lifetime);
            tokio::select! {
                () = self.done.cancelled() => return std::future::pending().await,
                changed = faults.changed() => if changed.is_err() { return std::future::pending().await },
                () = sleep_until_option(deadline) => {
                    self.cut.cancel();
                    return;
                }
            }
        }
    }
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn read_some(stream: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buffer) {
            Ok(count) => return Ok(count),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(count) => bytes = &bytes[count..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
