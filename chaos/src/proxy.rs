//! A TCP proxy that sits on every replica-to-replica path so the harness can cut, slow down
//! and lose the traffic between replicas without touching the traffic of its own clients.
//!
//! Each replica advertises to its peers the proxy's listen address for it instead of its real
//! port. When the proxy accepts a connection it works out which replica opened it (from the
//! replica id its first request carries, or else through `/proc`), so every byte has a
//! known sender and receiver and the link table (directional, `from -> to`) decides what
//! happens to it.
//!
//! What it guarantees:
//! - A stream is never corrupted: bytes that get through arrive complete and in order. A
//!   chunk that is lost takes the whole connection with it.
//! - A cut connection behaves like a partitioned TCP connection: it stays open and silent in
//!   both directions until the cut is lifted, then it is reset. A connection that arrives
//!   while its link is down is never connected upstream.
//! - A replica that is down looks down: if the upstream connect fails, the accepted socket is
//!   closed at once.
//! - Memory is bounded: each direction of a connection holds at most [`MAX_QUEUED_CHUNKS`]
//!   chunks of at most [`CHUNK_SIZE`] bytes; beyond that the proxy stops reading.
//! - Every random choice (jitter, loss, how long a lossy cut lasts) comes from one seeded RNG.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

/// Bytes read from a socket at a time; one chunk is the unit of delay and loss.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Chunks one direction of a connection may hold while they wait out a delay.
pub const MAX_QUEUED_CHUNKS: usize = 1024;

/// Shortest time a connection severed by loss stays a blackhole before it is closed.
const LOSSY_SEVER_MIN: Duration = Duration::from_millis(200);

/// Longest time a connection severed by loss stays a blackhole before it is closed.
const LOSSY_SEVER_MAX: Duration = Duration::from_millis(2000);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What a directional link between two replicas does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// Everything gets through at once.
    Up,
    /// Nothing gets through, like a network partition.
    Down,
    /// Every chunk is held back by `ms` plus a uniform random 0..=jitter_ms, order preserved within a direction of a connection.
    Delay {
        /// Fixed part of the delay, in milliseconds.
        ms: u64,
        /// Upper bound of the random extra delay, in milliseconds.
        jitter_ms: u64,
    },
    /// Each chunk is lost with this probability; a connection that loses a chunk is severed.
    Lossy {
        /// Probability in `0.0..=1.0` that a chunk is lost.
        drop_probability: f64,
    },
}

/// Counters over the proxy's whole life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyStats {
    /// Connections accepted on any listener.
    pub accepted: u64,
    /// Accepted connections whose sender was found among the registered replica pids.
    pub identified: u64,
    /// Accepted connections whose sender was not found.
    pub unidentified: u64,
    /// Accepted connections that arrived while their link was down and were never connected
    /// upstream.
    pub blackholed: u64,
    /// Accepted connections closed at once because the upstream connect failed.
    pub refused: u64,
    /// Bytes written to either side, both directions together.
    pub bytes_forwarded: u64,
    /// Chunks read and never written: lost, cut, or read while a connection was a blackhole.
    pub chunks_dropped: u64,
    /// Established connections turned into a blackhole by a down or lossy link.
    pub severed: u64,
}

/// A chaos proxy for the replica-to-replica paths of one cluster.
///
/// Cheap to clone; every clone drives the same listeners and link table. When the last clone
/// is dropped, every listener and connection is closed.
#[derive(Clone)]
pub struct Proxy {
    handle: Arc<Handle>,
}

/// Owned by the `Proxy` clones only (tasks hold [`Inner`]), so its drop means "no more
/// users".
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.shutdown.send_replace(true);
    }
}

struct Inner {
    state: Mutex<State>,
    rng: Mutex<ChaCha8Rng>,
    /// Bumped on every change to the link table; connections waiting for a link to come back
    /// watch it.
    links_changed: watch::Sender<u64>,
    /// Set once every `Proxy` clone is gone; every task watches it.
    shutdown: watch::Sender<bool>,
    stats: Counters,
}

#[derive(Default)]
struct State {
    /// Links that are not `Up`; a missing entry is `Up`.
    links: HashMap<(u64, u64), Link>,
    /// Replicas the proxy has heard of through `add`, `set_pid`, `set_link` or `isolate`.
    known: BTreeSet<u64>,
    pids: HashMap<u64, u32>,
    listeners: HashMap<u64, ListenerEntry>,
}

struct ListenerEntry {
    addr: SocketAddr,
    target: SocketAddr,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    identified: AtomicU64,
    unidentified: AtomicU64,
    blackholed: AtomicU64,
    refused: AtomicU64,
    bytes_forwarded: AtomicU64,
    chunks_dropped: AtomicU64,
    severed: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Proxy {
    /// A proxy with no listeners yet; `seed` drives every random choice (jitter, loss), so a run is replayable.
    pub fn new(seed: u64) -> Proxy {
        let (links_changed, _) = watch::channel(0);
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            links_changed,
            shutdown,
            stats: Counters::default(),
        });
        Proxy {
            handle: Arc::new(Handle { inner }),
        }
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Starts (or returns the existing) listener on 127.0.0.1:0 for replica `id`, forwarding to `target`. Returns the listen address.
    /// Calling it again for the same id with a new target keeps the listen address and changes the target.
    ///
    /// A new target applies to connections accepted from then on; established connections
    /// keep their upstream.
    pub async fn add(&self, id: u64, target: SocketAddr) -> anyhow::Result<SocketAddr> {
        let inner = self.inner();
        let listener = {
            let mut state = inner.lock_state();
            state.known.insert(id);
            if let Some(entry) = state.listeners.get_mut(&id) {
                entry.target = target;
                debug!(id, %target, listen = %entry.addr, "proxy: new target");
                return Ok(entry.addr);
            }
            // Bound synchronously under the lock so two concurrent `add`s for one id cannot
            // both create a listener.
            let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .context("binding a proxy listener on 127.0.0.1")?;
            std_listener
                .set_nonblocking(true)
                .context("making the proxy listener non-blocking")?;
            let listener = TcpListener::from_std(std_listener)
                .context("registering the proxy listener with tokio")?;
            let addr = listener
                .local_addr()
                .context("reading the proxy listener's address")?;
            state.listeners.insert(id, ListenerEntry { addr, target });
            debug!(id, %target, listen = %addr, "proxy: listening");
            listener
        };
        let addr = listener
            .local_addr()
            .context("reading the proxy listener's address")?;
        tokio::spawn(accept_loop(Arc::clone(inner), id, listener));
        Ok(addr)
    }

    /// The address the proxy listens on for replica `id`, if [`Proxy::add`] was called for it.
    pub fn listen_addr(&self, id: u64) -> Option<SocketAddr> {
        self.inner().lock_state().listeners.get(&id).map(|l| l.addr)
    }

    /// The pid of replica `id`'s current process (None while it is down).
    pub fn set_pid(&self, id: u64, pid: Option<u32>) {
        let mut state = self.inner().lock_state();
        state.known.insert(id);
        match pid {
            Some(pid) => state.pids.insert(id, pid),
            None => state.pids.remove(&id),
        };
    }

    /// Sets the link carrying bytes from `from` to `to` (directional).
    pub fn set_link(&self, from: u64, to: u64, link: Link) {
        self.inner().update_links(|state| {
            state.known.insert(from);
            state.known.insert(to);
            state.set(from, to, link);
        });
    }

    /// The link carrying bytes from `from` to `to`; `Up` unless set otherwise.
    pub fn link(&self, from: u64, to: u64) -> Link {
        self.inner().lock_state().get(from, to)
    }

    /// Cuts every link to and from `id` (both directions).
    ///
    /// "Every" means with every replica the proxy has heard of so far (through `add`,
    /// `set_pid` or `set_link`).
    pub fn isolate(&self, id: u64) {
        self.inner().update_links(|state| {
            state.known.insert(id);
            let others: Vec<u64> = state.known.iter().copied().filter(|&o| o != id).collect();
            for other in others {
                state.set(id, other, Link::Down);
                state.set(other, id, Link::Down);
            }
        });
    }

    /// Cuts every link between replicas of different groups.
    ///
    /// Links within a group, and links of replicas named in no group, are left as they are.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        self.inner().update_links(|state| {
            for (i, group) in groups.iter().enumerate() {
                for other_group in groups.iter().skip(i + 1) {
                    for &a in group {
                        for &b in other_group {
                            if a != b {
                                state.set(a, b, Link::Down);
                                state.set(b, a, Link::Down);
                            }
                        }
                    }
                }
                state.known.extend(group.iter().copied());
            }
        });
    }

    /// Every link Up again.
    pub fn heal(&self) {
        self.inner().update_links(|state| state.links.clear());
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.inner().stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            accepted: get(&c.accepted),
            identified: get(&c.identified),
            unidentified: get(&c.unidentified),
            blackholed: get(&c.blackholed),
            refused: get(&c.refused),
            bytes_forwarded: get(&c.bytes_forwarded),
            chunks_dropped: get(&c.chunks_dropped),
            severed: get(&c.severed),
        }
    }
}

impl State {
    fn get(&self, from: u64, to: u64) -> Link {
        self.links.get(&(from, to)).copied().unwrap_or(Link::Up)
    }

    fn set(&mut self, from: u64, to: u64, link: Link) {
        if link == Link::Up {
            self.links.remove(&(from, to));
        } else {
            self.links.insert((from, to), link);
        }
    }

    /// Whether every other known replica's link into `id` is down (and there is at least one).
    #[cfg(test)]
    fn isolated(&self, id: u64) -> bool {
        let mut others = self.known.iter().copied().filter(|&o| o != id).peekable();
        others.peek().is_some() && others.all(|o| self.get(o, id) == Link::Down)
    }

    /// The link for one direction of a connection; `None` is a sender the proxy could not
    /// identify, and the other end is then the receiving replica. Such a connection may
    /// be any peer's, so it is cut when any link it could be is down: a partition then
    /// never leaks through it (it may cut a link that should have stayed up, which only
    /// makes the fault harsher).
    fn effective(&self, from: Option<u64>, to: Option<u64>) -> Link {
        let down_from = |replica: u64| {
            self.links
                .iter()
                .any(|(&(f, _), l)| f == replica && *l == Link::Down)
        };
        let down_into = |replica: u64| {
            self.links
                .iter()
                .any(|(&(_, t), l)| t == replica && *l == Link::Down)
        };
        let cut = match (from, to) {
            (Some(from), Some(to)) => return self.get(from, to),
            (None, Some(receiver)) => down_into(receiver),
            (Some(receiver), None) => down_from(receiver),
            (None, None) => false,
        };
        if cut {
            Link::Down
        } else {
            Link::Up
        }
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // The state is plain data that every writer leaves consistent, so a panic elsewhere
        // while holding the lock does not make it unusable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_rng(&self) -> MutexGuard<'_, ChaCha8Rng> {
        self.rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update_links(&self, f: impl FnOnce(&mut State)) {
        {
            let mut state = self.lock_state();
            f(&mut state);
            debug!(links = ?state.links, "proxy: link table changed");
        }
        self.links_changed
            .send_modify(|generation| *generation += 1);
    }

    fn effective(&self, from: Option<u64>, to: Option<u64>) -> Link {
        self.lock_state().effective(from, to)
    }

    /// Whether `id` is a replica the proxy knows.
    fn knows(&self, id: u64) -> bool {
        self.lock_state().known.contains(&id)
    }

    fn target(&self, id: u64) -> Option<SocketAddr> {
        self.lock_state().listeners.get(&id).map(|l| l.target)
    }

    fn pids(&self) -> Vec<(u64, u32)> {
        self.lock_state()
            .pids
            .iter()
            .map(|(&id, &pid)| (id, pid))
            .collect()
    }

    /// Resolves once the link `from -> to` is no longer `Down`.
    async fn wait_not_down(&self, from: Option<u64>, to: Option<u64>) {
        let mut changes = self.links_changed.subscribe();
        loop {
            changes.borrow_and_update();
            if self.effective(from, to) != Link::Down {
                return;
            }
            if changes.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen; never spin if it does.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves once every `Proxy` clone has been dropped.
    async fn wait_shutdown(&self) {
        let mut rx = self.shutdown.subscribe();
        // `wait_for` fails only if the sender is gone, which it cannot be while `self` lives.
        let _ = rx.wait_for(|&down| down).await;
    }
}

async fn accept_loop(inner: Arc<Inner>, id: u64, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = inner.wait_shutdown() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                bump(&inner.stats.accepted, 1);
                let inner = Arc::clone(&inner);
                tokio::spawn(async move {
                    tokio::select! {
                        () = serve(&inner, id, stream, peer) => {}
                        () = inner.wait_shutdown() => {}
                    }
                });
            }
            Err(e) => {
                debug!(id, error = %e, "proxy: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
    debug!(id, "proxy: listener closed");
}

/// One accepted connection from `peer` to replica `id`'s listener, from identification to
/// close.
async fn serve(inner: &Inner, id: u64, client: TcpStream, peer: SocketAddr) {
    let receiver = Some(id);
    let sender = match sniff_sender(&client).await.filter(|s| inner.knows(*s)) {
        Some(sender) => Some(sender),
        None => match client.local_addr() {
            Ok(listen) => identify(inner.pids(), peer, listen).await,
            Err(_) => None,
        },
    };
    if sender.is_some() {
        bump(&inner.stats.identified, 1);
    } else {
        bump(&inner.stats.unidentified, 1);
    }
    debug!(receiver = id, ?sender, %peer, "proxy: accepted");

    if inner.effective(sender, receiver) == Link::Down {
        bump(&inner.stats.blackholed, 1);
        debug!(
            receiver = id,
            ?sender,
            "proxy: link down, blackholing new connection"
        );
        let mut client = client;
        tokio::select! {
            () = discard(inner, &mut client) => {}
            () = inner.wait_not_down(sender, receiver) => {}
        }
        reset(&client);
        debug!(
            receiver = id,
            ?sender,
            "proxy: link back, closed blackholed connection"
        );
        return;
    }

    let Some(target) = inner.target(id) else {
        reset(&client);
        return;
    };
    let mut upstream = match TcpStream::connect(target).await {
        Ok(upstream) => upstream,
        Err(e) => {
            bump(&inner.stats.refused, 1);
            debug!(receiver = id, ?sender, %target, error = %e, "proxy: upstream connect failed");
            reset(&client);
            return;
        }
    };
    // Replicas exchange small latency-sensitive RPCs; do not let Nagle add delays of its own.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let mut client = client;
    let (severance, _) = watch::channel(None::<Severance>);
    {
        let (client_rd, client_wr) = client.split();
        let (upstream_rd, upstream_wr) = upstream.split();
        let forward = Direction {
            from: sender,
            to: receiver,
        };
        let backward = Direction {
            from: receiver,
            to: sender,
        };
        let pumps = async {
            let _ = futures::future::try_join(
                pump(inner, forward, client_rd, upstream_wr, &severance),
                pump(inner, backward, upstream_rd, client_wr, &severance),
            )
            .await;
            // A severed connection stays a blackhole until the cut is over, even if both
            // peers closed their side meanwhile.
            if severance.borrow().is_some() {
                wait_severance_over(inner, &severance).await;
            }
        };
        tokio::select! {
            () = pumps => {}
            () = wait_severance_over(inner, &severance) => {}
        }
    }
    if severance.borrow().is_some() {
        reset(&client);
        reset(&upstream);
        debug!(
            receiver = id,
            ?sender,
            "proxy: cut over, closed severed connection"
        );
    } else {
        debug!(receiver = id, ?sender, "proxy: connection finished");
    }
}

/// One direction of a connection, between replica ids (`None`: an unidentified sender).
#[derive(Debug, Clone, Copy)]
struct Direction {
    from: Option<u64>,
    to: Option<u64>,
}

/// Why a connection became a blackhole, and so what ends it.
#[derive(Debug, Clone, Copy)]
enum Severance {
    /// A chunk met a down link in this direction; over when the link is not down.
    Down(Direction),
    /// A chunk was lost on a lossy link; over at this instant.
    Lost(Instant),
}

/// Marks the connection severed, unless it already is.
fn sever(inner: &Inner, severance: &watch::Sender<Option<Severance>>, why: Severance) {
    let first = severance.send_if_modified(|current| {
        if current.is_none() {
            *current = Some(why);
            true
        } else {
            false
        }
    });
    if first {
        bump(&inner.stats.severed, 1);
        debug!(?why, "proxy: connection severed");
    }
}

/// Resolves once the connection has been severed and the cause has passed.
async fn wait_severance_over(inner: &Inner, severance: &watch::Sender<Option<Severance>>) {
    let mut rx = severance.subscribe();
    let Ok(why) = rx.wait_for(|s| s.is_some()).await.map(|s| *s) else {
        // The sender is borrowed by the caller, so it outlives this future.
        return std::future::pending().await;
    };
    match why {
        Some(Severance::Down(dir)) => inner.wait_not_down(dir.from, dir.to).await,
        Some(Severance::Lost(until)) => tokio::time::sleep_until(until).await,
        None => {}
    }
}

/// A chunk waiting to be written, no earlier than `at`.
struct Chunk {
    at: Instant,
    data: Vec<u8>,
}

/// Moves bytes one way, applying the link of `dir` to each chunk as it is read. Returns `Ok`
/// once the reading side ended and everything queued was written (or discarded), `Err` if a
/// socket failed while the connection was not severed.
async fn pump<R, W>(
    inner: &Inner,
    dir: Direction,
    mut rd: R,
    mut wr: W,
    severance: &watch::Sender<Option<Severance>>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let severed = || severance.borrow().is_some();
    let (tx, mut rx) = mpsc::channel::<Chunk>(MAX_QUEUED_CHUNKS);

    let reading = async move {
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(_) if severed() => return Ok(()),
                Err(e) => return Err(e),
            };
            if severed() {
                bump(&inner.stats.chunks_dropped, 1);
                continue;
            }
            let now = Instant::now();
            let at = match inner.effective(dir.from, dir.to) {
                Link::Up => now,
                Link::Delay { ms, jitter_ms } => {
                    let jitter = if jitter_ms == 0 {
                        0
                    } else {
                        inner.lock_rng().gen_range(0..=jitter_ms)
                    };
                    now + Duration::from_millis(ms.saturating_add(jitter))
                }
                Link::Lossy { drop_probability } => {
                    let lost = {
                        let mut rng = inner.lock_rng();
                        if rng.gen::<f64>() < drop_probability {
                            Some(rng.gen_range(LOSSY_SEVER_MIN..=LOSSY_SEVER_MAX))
                        } else {
                            None
                        }
                    };
                    if let Some(cut_for) = lost {
                        bump(&inner.stats.chunks_dropped, 1);
                        sever(inner, severance, Severance::Lost(now + cut_for));
                        continue;
                    }
                    now
                }
                Link::Down => {
                    bump(&inner.stats.chunks_dropped, 1);
                    sever(inner, severance, Severance::Down(dir));
                    continue;
                }
            };
            let chunk = Chunk {
                at,
                data: buf[..n].to_vec(),
            };
            // Waits while the queue is full: that is the backpressure. It fails only if the
            // writer is gone, and the writer only leaves early with an error of its own.
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
    };

    let writing = async {
        while let Some(chunk) = rx.recv().await {
            if !severed() {
                // Chunks come out in the order they went in, and each waits for its own
                // deadline, so a later chunk with a shorter delay never overtakes.
                tokio::time::sleep_until(chunk.at).await;
            }
            if severed() {
                bump(&inner.stats.chunks_dropped, 1);
                continue;
            }
            match wr.write_all(&chunk.data).await {
                Ok(()) => bump(&inner.stats.bytes_forwarded, chunk.data.len() as u64),
                Err(_) if severed() => {}
                Err(e) => return Err(e),
            }
        }
        if !severed() {
            // Pass the half-close on; the peer may already be gone, which is not our concern.
            let _ = wr.shutdown().await;
        }
        Ok(())
    };

    futures::future::try_join(reading, writing)
        .await
        .map(|_| ())
}

/// Reads and throws away everything until the peer closes or fails, then waits forever.
async fn discard(inner: &Inner, stream: &mut TcpStream) {
    let mut buf = vec![0u8; CHUNK_SIZE];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        bump(&inner.stats.chunks_dropped, 1);
    }
    std::future::pending::<()>().await
}

/// Arranges for the socket to be reset rather than closed gracefully when it is dropped, the
/// way a peer sees a connection that broke.
fn reset(stream: &TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        debug!(error = %e, "proxy: could not set SO_LINGER 0; the close will be graceful");
    }
}

/// How long a new connection may stay silent before the proxy stops waiting for its
/// request head and identifies the sender through `/proc` instead.
const SNIFF_WAIT: Duration = Duration::from_millis(100);

/// The sender a replica names in its first request on the connection: Raft RPCs carry
/// `x-controller-from`, requests a replica forwards carry `x-controller-forwarded-by`.
/// Reading a header is far cheaper than searching `/proc` for the socket's owner, which
/// matters when faults make replicas reconnect dozens of times a second. The bytes are
/// only peeked at, never consumed.
async fn sniff_sender(client: &TcpStream) -> Option<u64> {
    let mut head = [0u8; 2048];
    let n = tokio::time::timeout(SNIFF_WAIT, client.peek(&mut head))
        .await
        .ok()?
        .ok()?;
    sender_header(&head[..n])
}

/// The replica id in an `x-controller-from` or `x-controller-forwarded-by` header of an
/// HTTP/1 request head (which may be cut short).
fn sender_header(head: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(head)
        .ok()
        .or_else(|| std::str::from_utf8(&head[..head.iter().position(|b| *b >= 0x80)?]).ok())?;
    let head = text.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case(controller_raft::HEADER_FROM)
            || name.eq_ignore_ascii_case(pageserver_controller::api::routing::FORWARDED_BY_HEADER))
        .then(|| value.trim().parse().ok())?
    })
}

/// Which registered replica process owns the client side of the connection from `peer` to
/// `listen`, found through `/proc`. Any failure means "unknown".
async fn identify(pids: Vec<(u64, u32)>, peer: SocketAddr, listen: SocketAddr) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    tokio::task::spawn_blocking(move || identify_blocking(&pids, peer, listen))
        .await
        .ok()
        .flatten()
}

fn identify_blocking(pids: &[(u64, u32)], peer: SocketAddr, listen: SocketAddr) -> Option<u64> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|path| {
            let table = std::fs::read_to_string(path).ok()?;
            find_socket_inode(&table, peer, listen)
        })?;
    let wanted = format!("socket:[{inode}]");
    pids.iter().find_map(|&(id, pid)| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        fds.filter_map(Result::ok)
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .map(|target| target.as_os_str() == wanted.as_str())
                    .unwrap_or(false)
            })
            .then_some(id)
    })
}

/// The inode of the socket in a `/proc/net/tcp{,6}` table whose local end is `local` and whose
/// remote end is `remote`.
fn find_socket_inode(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let local = canonical(local);
    let remote = canonical(remote);
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let row_local = parse_proc_addr(fields.get(1)?)?;
        let row_remote = parse_proc_addr(fields.get(2)?)?;
        let inode: u64 = fields.get(9)?.parse().ok()?;
        (row_local == local && row_remote == remote && inode != 0).then_some(inode)
    })
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Parses `0100007F:1389` (IPv4) or a 32-digit IPv6 address with a port, as the kernel prints
/// them: each 32-bit word of the address in host byte order, the port as a plain number.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip_hex, port_hex) = text.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip_hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip_hex.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::time::timeout;

    const DEADLINE: Duration = Duration::from_secs(10);
    /// Long enough that a forwarded echo on loopback would certainly have arrived.
    const SILENCE: Duration = Duration::from_millis(500);

    /// An echo server; the counter is the number of connections it accepted.
    async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind echo server");
        let addr = listener.local_addr().expect("echo server address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut rd, mut wr) = stream.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
        (addr, accepted)
    }

    /// A proxy with replica 1 behind an echo server, this process registered as replica 7,
    /// and a third known replica 8 so that cutting 7 -> 1 does not isolate 1 entirely.
    async fn setup(seed: u64) -> (Proxy, SocketAddr, Arc<AtomicUsize>) {
        let (echo, accepted) = echo_server().await;
        let proxy = Proxy::new(seed);
        let listen = proxy.add(1, echo).await.expect("add replica 1");
        proxy.set_pid(7, Some(std::process::id()));
        proxy.set_pid(8, None);
        (proxy, listen, accepted)
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn roundtrip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        stream.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        timeout(DEADLINE, stream.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read echo");
        back
    }

    /// Asserts nothing arrives on `stream` for [`SILENCE`].
    async fn assert_silent(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match timeout(SILENCE, stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(result) => panic!("expected silence, got {result:?}"),
        }
    }

    /// Asserts the proxy closes `stream` (EOF or error) before the deadline.
    async fn assert_closed(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match timeout(DEADLINE, stream.read(&mut buf)).await {
            Err(_) => panic!("connection not closed within {DEADLINE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("expected close, got {n} bytes"),
        }
    }

    #[tokio::test]
    async fn up_forwards_both_ways_and_identifies_sender() {
        let (proxy, listen, accepted) = setup(1).await;
        assert_eq!(proxy.listen_addr(1), Some(listen));
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"hello").await, b"hello");
        assert_eq!(roundtrip(&mut stream, b"again").await, b"again");
        let stats = proxy.stats();
        assert_eq!(stats.accepted, 1);
        assert_eq!(stats.identified, 1, "{stats:?}");
        assert_eq!(stats.unidentified, 0, "{stats:?}");
        assert_eq!(stats.bytes_forwarded, 20, "{stats:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Half-close travels through: the echo server sees EOF and closes its side.
        stream.shutdown().await.expect("shutdown");
        assert_closed(&mut stream).await;
    }

    #[tokio::test]
    async fn a_sender_named_in_its_request_head_is_identified_without_proc() {
        let (proxy, addr, _) = setup(31).await;
        // Replica 7 is known but has no pid: only the header can identify it.
        proxy.set_pid(7, None);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = b"POST /raft/v1/append HTTP/1.1\r\nhost: x\r\nX-Controller-From: 7\r\n\r\n";
        let echoed = roundtrip(&mut stream, request).await;
        assert_eq!(echoed, request);
        assert_eq!(proxy.stats().identified, 1);
        assert_eq!(proxy.stats().unidentified, 0);
    }

    #[test]
    fn sender_headers_are_read_from_a_request_head() {
        let head =
            b"GET /v1/cluster/read-index HTTP/1.1\r\nx-controller-forwarded-by: 3\r\n\r\nbody";
        assert_eq!(sender_header(head), Some(3));
        assert_eq!(
            sender_header(b"POST / HTTP/1.1\r\nx-controller-from: 12\r\n"),
            Some(12)
        );
        assert_eq!(sender_header(b"POST / HTTP/1.1\r\nhost: a\r\n\r\n"), None);
        // A header in the body does not count.
        assert_eq!(
            sender_header(b"POST / HTTP/1.1\r\n\r\nx-controller-from: 1\r\n"),
            None
        );
        assert_eq!(sender_header(&[0x16, 0x03, 0x01, 0xff, 0x00]), None);
    }

    #[tokio::test]
    async fn unregistered_sender_is_unidentified_and_forwarded() {
        let (echo, _) = echo_server().await;
        let proxy = Proxy::new(2);
        let listen = proxy.add(1, echo).await.expect("add");
        proxy.set_pid(2, Some(u32::MAX)); // no such process
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"hi").await, b"hi");
        let stats = proxy.stats();
        assert_eq!((stats.identified, stats.unidentified), (0, 1), "{stats:?}");
    }

    #[tokio::test]
    async fn add_again_keeps_address_and_changes_target() {
        let (first, first_accepted) = echo_server().await;
        let (second, second_accepted) = echo_server().await;
        let proxy = Proxy::new(3);
        let listen = proxy.add(1, first).await.expect("add");
        assert_eq!(proxy.add(1, second).await.expect("re-add"), listen);
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"x").await, b"x");
        assert_eq!(first_accepted.load(Ordering::SeqCst), 0);
        assert_eq!(second_accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn down_blackholes_existing_connection_until_heal() {
        let (proxy, listen, _) = setup(4).await;
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"before").await, b"before");

        proxy.set_link(7, 1, Link::Down);
        stream.write_all(b"during").await.expect("write");
        assert_silent(&mut stream).await;
        assert_eq!(proxy.stats().severed, 1);

        // Still silent (not closed) while the cut lasts, whatever else is written.
        stream.write_all(b"more").await.expect("write");
        assert_silent(&mut stream).await;

        proxy.heal();
        assert_closed(&mut stream).await;
        // Only the bytes before the cut went through, each way.
        assert_eq!(proxy.stats().bytes_forwarded, 12);
    }

    #[tokio::test]
    async fn down_in_the_reply_direction_blackholes_too() {
        let (proxy, listen, _) = setup(5).await;
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"a").await, b"a");
        proxy.set_link(1, 7, Link::Down);
        stream.write_all(b"b").await.expect("write");
        assert_silent(&mut stream).await;
        // Lifting an unrelated cut does not end it.
        proxy.set_link(8, 1, Link::Down);
        proxy.set_link(8, 1, Link::Up);
        assert_silent(&mut stream).await;
        proxy.set_link(1, 7, Link::Up);
        assert_closed(&mut stream).await;
    }

    #[tokio::test]
    async fn new_connection_while_down_is_not_connected_upstream() {
        let (proxy, listen, accepted) = setup(6).await;
        proxy.set_link(7, 1, Link::Down);
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        wait_until("the proxy to identify the connection", || {
            proxy.stats().identified == 1
        })
        .await;
        stream.write_all(b"anyone?").await.expect("write");
        assert_silent(&mut stream).await;
        assert_eq!(proxy.stats().blackholed, 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "connected upstream");

        proxy.heal();
        assert_closed(&mut stream).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "connected upstream");
    }

    #[tokio::test]
    async fn unknown_sender_is_cut_when_receiver_is_isolated() {
        let (echo, accepted) = echo_server().await;
        let proxy = Proxy::new(7);
        let listen = proxy.add(1, echo).await.expect("add");
        proxy.set_pid(2, None);
        proxy.set_pid(3, None);
        proxy.isolate(1);
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        stream.write_all(b"x").await.expect("write");
        assert_silent(&mut stream).await;
        let stats = proxy.stats();
        assert_eq!((stats.unidentified, stats.blackholed), (1, 1), "{stats:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        proxy.heal();
        assert_closed(&mut stream).await;
    }

    #[tokio::test]
    async fn failed_upstream_connect_closes_client() {
        let dead = {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("bind");
            listener.local_addr().expect("address")
        };
        let proxy = Proxy::new(8);
        let listen = proxy.add(1, dead).await.expect("add");
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_closed(&mut stream).await;
        assert_eq!(proxy.stats().refused, 1);
    }

    #[tokio::test]
    async fn delay_holds_each_direction_back() {
        let (proxy, listen, _) = setup(9).await;
        proxy.set_link(
            7,
            1,
            Link::Delay {
                ms: 600,
                jitter_ms: 0,
            },
        );
        proxy.set_link(
            1,
            7,
            Link::Delay {
                ms: 400,
                jitter_ms: 0,
            },
        );
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        let start = Instant::now();
        assert_eq!(roundtrip(&mut stream, b"slow").await, b"slow");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1000),
            "round trip took {took:?}"
        );

        // Under the delay by a margin a busy machine does not eat.
        proxy.heal();
        let start = Instant::now();
        assert_eq!(roundtrip(&mut stream, b"fast").await, b"fast");
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "round trip took {took:?}"
        );
    }

    #[tokio::test]
    async fn delay_with_jitter_preserves_order() {
        let (proxy, listen, _) = setup(10).await;
        proxy.set_link(
            7,
            1,
            Link::Delay {
                ms: 5,
                jitter_ms: 40,
            },
        );
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut sent = Vec::new();
        for i in 0..40u8 {
            let msg = [i; 3];
            stream.write_all(&msg).await.expect("write");
            sent.extend_from_slice(&msg);
            // Separate writes so the proxy sees separate chunks with different jitter.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut back = vec![0u8; sent.len()];
        timeout(DEADLINE, stream.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(back, sent);
    }

    #[tokio::test]
    async fn certain_loss_severs_then_closes() {
        let (proxy, listen, _) = setup(11).await;
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"ok").await, b"ok");
        proxy.set_link(
            7,
            1,
            Link::Lossy {
                drop_probability: 1.0,
            },
        );
        stream.write_all(b"lost").await.expect("write");
        // The blackhole lasts at least LOSSY_SEVER_MIN, so this read sees silence or, late in
        // the window, the close; never an echo.
        let mut buf = [0u8; 16];
        match timeout(LOSSY_SEVER_MIN, stream.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("got {n} bytes through a lossy link"),
        }
        let stats = proxy.stats();
        assert_eq!((stats.severed, stats.chunks_dropped), (1, 1), "{stats:?}");
        // Closed after the random 0.2..2 s without any heal.
        assert_closed(&mut stream).await;
    }

    #[tokio::test]
    async fn loss_of_zero_forwards_everything() {
        let (proxy, listen, _) = setup(12).await;
        proxy.set_link(
            7,
            1,
            Link::Lossy {
                drop_probability: 0.0,
            },
        );
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        for _ in 0..20 {
            assert_eq!(roundtrip(&mut stream, b"kept").await, b"kept");
        }
        assert_eq!(proxy.stats().severed, 0);
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_listeners_and_connections() {
        let (proxy, listen, _) = setup(13).await;
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"x").await, b"x");
        drop(proxy);
        assert_closed(&mut stream).await;
    }

    #[test]
    fn isolate_partition_heal_set_the_link_table() {
        let proxy = Proxy::new(0);
        for id in 1..=3 {
            proxy.set_pid(id, None);
        }
        let all = |proxy: &Proxy| {
            let mut downs = Vec::new();
            for from in 1..=3 {
                for to in 1..=3 {
                    if from != to && proxy.link(from, to) == Link::Down {
                        downs.push((from, to));
                    }
                }
            }
            downs
        };
        assert_eq!(all(&proxy), vec![]);

        proxy.isolate(2);
        assert_eq!(all(&proxy), vec![(1, 2), (2, 1), (2, 3), (3, 2)]);
        assert!(proxy.inner().lock_state().isolated(2));
        assert!(!proxy.inner().lock_state().isolated(1));

        proxy.heal();
        assert_eq!(all(&proxy), vec![]);

        proxy.partition(&[vec![1], vec![2, 3]]);
        assert_eq!(all(&proxy), vec![(1, 2), (1, 3), (2, 1), (3, 1)]);
        assert!(proxy.inner().lock_state().isolated(1));

        let slow = Link::Delay {
            ms: 10,
            jitter_ms: 1,
        };
        proxy.set_link(2, 3, slow);
        assert_eq!(proxy.link(2, 3), slow);
        assert_eq!(proxy.link(3, 2), Link::Up);
        // Replica 1 still hears from nobody: isolation is about inbound links.
        proxy.set_link(1, 2, Link::Up);
        assert_eq!(all(&proxy), vec![(1, 3), (2, 1), (3, 1)]);
        assert!(proxy.inner().lock_state().isolated(1));
        proxy.set_link(2, 1, Link::Up);
        assert_eq!(all(&proxy), vec![(1, 3), (3, 1)]);
        assert!(!proxy.inner().lock_state().isolated(1));

        proxy.heal();
        assert_eq!(all(&proxy), vec![]);
        assert_eq!(proxy.link(2, 3), Link::Up);
    }

    /// A connection whose sender is unknown may be any peer's: it is cut as soon as one
    /// link it could be is down, in the direction that link goes.
    #[test]
    fn unknown_sender_is_cut_by_any_link_it_could_be() {
        let proxy = Proxy::new(0);
        for id in 1..=3 {
            proxy.set_pid(id, None);
        }
        let state = || proxy.inner().lock_state();
        assert_eq!(state().effective(None, Some(1)), Link::Up);
        assert_eq!(state().effective(Some(1), None), Link::Up);
        // 2 -> 1 down (as in a split, or the leader deaf to one follower): a connection
        // into 1 from an unknown peer may be 2's.
        proxy.set_link(2, 1, Link::Down);
        assert_eq!(state().effective(None, Some(1)), Link::Down);
        // 1's answers flow 1 -> sender: still up, no link out of 1 is down.
        assert_eq!(state().effective(Some(1), None), Link::Up);
        // Into 2 nothing is down; out of 2 (its answers) the link to 1 is.
        assert_eq!(state().effective(None, Some(2)), Link::Up);
        assert_eq!(state().effective(Some(2), None), Link::Down);
        // Delays do not cut.
        proxy.heal();
        proxy.set_link(
            3,
            1,
            Link::Delay {
                ms: 10,
                jitter_ms: 1,
            },
        );
        assert_eq!(state().effective(None, Some(1)), Link::Up);
    }

    #[test]
    fn parses_proc_net_tcp_rows() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1389 0100007F:0050 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1\n\
   1: 0100007F:1389 0100007F:0051 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000\n\
   2: 0100007F:0050 0100007F:1389 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1\n";
        let client: SocketAddr = "127.0.0.1:5001".parse().expect("addr");
        let server: SocketAddr = "127.0.0.1:80".parse().expect("addr");
        assert_eq!(find_socket_inode(v4, client, server), Some(4242));
        assert_eq!(find_socket_inode(v4, server, client), Some(4343));
        // TIME_WAIT rows have inode 0 and never match.
        let other: SocketAddr = "127.0.0.1:81".parse().expect("addr");
        assert_eq!(find_socket_inode(v4, client, other), None);

        if cfg!(target_endian = "little") {
            let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0000000000000000FFFF00000100007F:1389 0000000000000000FFFF00000100007F:0050 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 20 4 30 10 -1\n\
   1: 00000000000000000000000001000000:1389 00000000000000000000000001000000:0050 01 00000000:00000000 00:00000000 00000000  1000        0 888 1 0000000000000000 20 4 30 10 -1\n";
            assert_eq!(find_socket_inode(v6, client, server), Some(777));
            let c6: SocketAddr = "[::1]:5001".parse().expect("addr");
            let s6: SocketAddr = "[::1]:80".parse().expect("addr");
            assert_eq!(find_socket_inode(v6, c6, s6), Some(888));
        }
    }
}
