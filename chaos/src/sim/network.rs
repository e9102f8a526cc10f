//! The in-process network: openraft's RPCs handed straight to the target replica's Raft,
//! through a link table that can cut, lose and delay them.
//!
//! The vocabulary is the proxy's ([`Link`]), applied per message instead of per byte:
//! - `Down`: the message never arrives; the sender sees the peer as unreachable;
//! - `Lossy`: the request is lost, or it arrives and its answer is lost (half each), so
//!   the sender cannot tell whether it took effect;
//! - `Delay`: both the request and its answer wait.
//!
//! A crashed replica is simply absent: messages to it fail as unreachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use controller_raft::Member;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use pageserver_controller::consensus::TypeConfig;
use pageserver_controller::replica::{LeaderReadIndex, Replica};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::proxy::Link;

/// How long a message to an unreachable peer takes to fail (keeps senders from spinning).
const UNREACHABLE_AFTER: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SimError(String);

/// Which kind of message a rule applies to (rules per kind let a scenario, say, let a
/// candidate's vote requests through while holding back its log entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcKind {
    Append,
    Vote,
    Snapshot,
    ReadIndex,
    /// A client request forwarded by a follower to the leader.
    Forward,
}

/// Why a forwarded request brought no answer.
pub enum Forwarded {
    /// It never arrived: nothing happened.
    NotDelivered,
    /// It arrived; its answer was lost.
    AnswerLost,
}

/// The replicas of one simulated cluster and the links between them.
pub struct SimNet {
    replicas: RwLock<BTreeMap<u64, Arc<Replica>>>,
    links: Mutex<HashMap<(u64, u64), Link>>,
    /// Rules for one kind of message, which take precedence over `links`.
    kind_links: Mutex<HashMap<(u64, u64, RpcKind), Link>>,
    rng: Mutex<ChaCha8Rng>,
}

/// What happens to one message on its way.
enum Fate {
    Deliver { delay: Duration },
    Unreachable,
    LoseRequest,
    LoseAnswer,
}

impl SimNet {
    pub fn new(seed: u64) -> Arc<SimNet> {
        Arc::new(SimNet {
            replicas: RwLock::default(),
            links: Mutex::default(),
            kind_links: Mutex::default(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x0e7_0e7)),
        })
    }

    /// A replica is up (`Some`) or crashed (`None`).
    pub fn set_replica(&self, id: u64, replica: Option<Arc<Replica>>) {
        let mut replicas = self.replicas.write().expect("replicas lock");
        match replica {
            Some(replica) => replicas.insert(id, replica),
            None => replicas.remove(&id),
        };
    }

    pub fn replica(&self, id: u64) -> Option<Arc<Replica>> {
        self.replicas
            .read()
            .expect("replicas lock")
            .get(&id)
            .cloned()
    }

    pub fn set_link(&self, from: u64, to: u64, link: Link) {
        let mut links = self.links.lock().expect("links lock");
        if link == Link::Up {
            links.remove(&(from, to));
        } else {
            links.insert((from, to), link);
        }
    }

    /// Sets the link for one kind of message from `from` to `to`.
    pub fn set_kind_link(&self, from: u64, to: u64, kind: RpcKind, link: Link) {
        self.kind_links
            .lock()
            .expect("links lock")
            .insert((from, to, kind), link);
    }

    /// Cuts both directions between `id` and every id in `others`.
    pub fn isolate(&self, id: u64, others: &[u64]) {
        for other in others.iter().filter(|o| **o != id) {
            self.set_link(id, *other, Link::Down);
            self.set_link(*other, id, Link::Down);
        }
    }

    pub fn heal(&self) {
        self.links.lock().expect("links lock").clear();
        self.kind_links.lock().expect("links lock").clear();
    }

    fn link(&self, from: u64, to: u64, kind: RpcKind) -> Link {
        if let Some(link) = self
            .kind_links
            .lock()
            .expect("links lock")
            .get(&(from, to, kind))
        {
            return *link;
        }
        self.links
            .lock()
            .expect("links lock")
            .get(&(from, to))
            .copied()
            .unwrap_or(Link::Up)
    }

    fn fate(&self, from: u64, to: u64, kind: RpcKind) -> Fate {
        match (self.link(from, to, kind), self.link(to, from, kind)) {
            (Link::Down, _) => Fate::Unreachable,
            // The request arrives; the answer cannot come back.
            (_, Link::Down) => Fate::LoseAnswer,
            (Link::Lossy { drop_probability }, _) => {
                let mut rng = self.rng.lock().expect("rng lock");
                if rng.gen_bool(drop_probability.clamp(0.0, 1.0)) {
                    if rng.gen_bool(0.5) {
                        Fate::LoseRequest
                    } else {
                        Fate::LoseAnswer
                    }
                } else {
                    Fate::Deliver {
                        delay: Duration::ZERO,
                    }
                }
            }
            (Link::Delay { ms, jitter_ms }, _) => {
                let jitter = self.rng.lock().expect("rng lock").gen_range(0..=jitter_ms);
                Fate::Deliver {
                    delay: Duration::from_millis(ms + jitter),
                }
            }
            (Link::Up, _) => Fate::Deliver {
                delay: Duration::ZERO,
            },
        }
    }

    /// Carries one call from `from` to `to`: `send` runs on the target if the message
    /// arrives; its answer comes back if the link lets it.
    async fn carry<T, Fut>(
        &self,
        from: u64,
        to: u64,
        kind: RpcKind,
        send: impl FnOnce(Arc<Replica>) -> Fut,
    ) -> Result<T, CallError>
    where
        Fut: std::future::Future<Output = T>,
    {
        let fate = self.fate(from, to, kind);
        let Some(target) = self.replica(to) else {
            tokio::time::sleep(UNREACHABLE_AFTER).await;
            return Err(CallError::Unreachable(format!("replica {to} is down")));
        };
        match fate {
            Fate::Unreachable => {
                tokio::time::sleep(UNREACHABLE_AFTER).await;
                Err(CallError::Unreachable(format!(
                    "replica {from} cannot reach replica {to}"
                )))
            }
            Fate::LoseRequest => {
                tokio::time::sleep(UNREACHABLE_AFTER).await;
                Err(CallError::Lost(format!(
                    "a message from replica {from} to replica {to} was lost"
                )))
            }
            Fate::LoseAnswer => {
                let _ = send(target).await;
                Err(CallError::Lost(format!(
                    "the answer of replica {to} to replica {from} was lost"
                )))
            }
            Fate::Deliver { delay } => {
                tokio::time::sleep(delay).await;
                let answer = send(target).await;
                tokio::time::sleep(delay).await;
                Ok(answer)
            }
        }
    }
}

impl SimNet {
    /// Carries a client request from the replica that received it to `leader`.
    pub async fn forward<T, Fut>(
        &self,
        from: u64,
        leader: u64,
        send: impl FnOnce(Arc<Replica>) -> Fut,
    ) -> Result<T, Forwarded>
    where
        Fut: std::future::Future<Output = T>,
    {
        self.carry(from, leader, RpcKind::Forward, send)
            .await
            .map_err(|e| match e {
                CallError::Unreachable(_) => Forwarded::NotDelivered,
                CallError::Lost(_) => Forwarded::AnswerLost,
            })
    }
}

enum CallError {
    Unreachable(String),
    Lost(String),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<u64, Member, E> {
        match self {
            CallError::Unreachable(why) => RPCError::Unreachable(Unreachable::new(&SimError(why))),
            CallError::Lost(why) => RPCError::Network(NetworkError::new(&SimError(why))),
        }
    }
}

/// One replica's side of the network.
#[derive(Clone)]
pub struct SimNetwork {
    pub from: u64,
    pub net: Arc<SimNet>,
}

pub struct SimConnection {
    from: u64,
    to: u64,
    member: Member,
    net: Arc<SimNet>,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimConnection;

    async fn new_client(&mut self, target: u64, node: &Member) -> SimConnection {
        SimConnection {
            from: self.from,
            to: target,
            member: node.clone(),
            net: self.net.clone(),
        }
    }
}

impl SimConnection {
    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<u64, E>,
    ) -> RPCError<u64, Member, RaftError<u64, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(self.to, self.member.clone(), e))
    }
}

impl RaftNetwork<TypeConfig> for SimConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let answer = self
            .net
            .carry(self.from, self.to, RpcKind::Append, |target| async move {
                target.raft().append_entries(rpc).await
            })
            .await
            .map_err(CallError::into_rpc)?;
        answer.map_err(|e| self.remote(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        let answer = self
            .net
            .carry(self.from, self.to, RpcKind::Snapshot, |target| async move {
                target.raft().install_snapshot(rpc).await
            })
            .await
            .map_err(CallError::into_rpc)?;
        answer.map_err(|e| self.remote(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let answer = self
            .net
            .carry(self.from, self.to, RpcKind::Vote, |target| async move {
                target.raft().vote(rpc).await
            })
            .await
            .map_err(CallError::into_rpc)?;
        answer.map_err(|e| self.remote(e))
    }
}

/// A follower's way to the leader's read index, over the same links.
pub struct SimReadIndex {
    pub from: u64,
    pub net: Arc<SimNet>,
}

impl LeaderReadIndex for SimReadIndex {
    fn fetch(
        &self,
        leader: u64,
        _member: Member,
        vote: Option<openraft::Vote<u64>>,
    ) -> futures::future::BoxFuture<'_, Result<u64, String>> {
        let from = self.from;
        Box::pin(async move {
            let answer = self
                .net
                .carry(self.from, leader, RpcKind::ReadIndex, |target| async move {
                    if !target.is_leader() {
                        return Err(format!("replica {leader} is not the leader"));
                    }
                    target
                        .read_index_for(from, vote)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
            match answer {
                Ok(result) => result,
                Err(CallError::Unreachable(why) | CallError::Lost(why)) => Err(why),
            }
        })
    }
}
