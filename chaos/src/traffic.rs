//! Neon-shaped traffic: sequential clients that behave like pageservers, an operator, and
//! clients that do anything, all recorded in one [`History`].
//!
//! - **Pageservers** (node 1..=N): re-attach at start (registering themselves) and now and
//!   then again (a restart); hold the shards and generations that re-attach or the
//!   operator gave them; validate what they hold in batches of 128, as before deleting,
//!   and drop what is no longer valid. Like Neon's, they retry a failed call with backoff
//!   until it succeeds.
//! - **The operator**: moves shards between pageservers with attach-hook and migrate,
//!   detaches some, inspects some, and tells the pageservers what it did.
//! - **Random clients**: attach, detach, migrate, validate, re-attach and inspect random
//!   shards and nodes (some unregistered), with guessed generations.
//!
//! Every client is sequential and sends each request to a replica chosen at random, so
//! followers forward and deposed leaders get asked. Every attempt is recorded.
//!
//! Shards rotate: a shard is used for a bounded number of operations, then the operator
//! detaches it and a fresh one takes its place. Each shard's history thus stays short
//! enough for the linearizability search however long the run, while the registry keeps
//! growing as a real one does. All choices come from the run's seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pageserver_controller::api::types::{LocationMode, NodeRegisterRequest};
use pageserver_controller::client::{self, Client};
use pageserver_controller::domain::{NodeId, TenantId, TenantShardId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use crate::history::{Answer, History, Outcome, Request};

/// The replicas clients may send to: (replica id, base URL).
#[derive(Clone, Default)]
pub struct Endpoints(Arc<RwLock<Vec<(u64, String)>>>);

impl Endpoints {
    pub fn new(endpoints: Vec<(u64, String)>) -> Endpoints {
        Endpoints(Arc::new(RwLock::new(endpoints)))
    }

    pub fn set(&self, endpoints: Vec<(u64, String)>) {
        *self.0.write().expect("endpoints lock") = endpoints;
    }

    pub fn get(&self) -> Vec<(u64, String)> {
        self.0.read().expect("endpoints lock").clone()
    }
}

#[derive(Debug, Clone)]
pub struct TrafficConfig {
    pub seed: u64,
    pub pageservers: u64,
    pub random_clients: u64,
    /// Shards in use at any time.
    pub active_shards: usize,
    /// Operations picked for a shard before it is retired.
    pub ops_per_shard: u32,
    /// A request without an answer after this is indeterminate.
    pub request_timeout: Duration,
    /// A pageserver restarts (re-attaches) on average this often.
    pub pageserver_restart_every: Duration,
    /// Bearer token sent with every request (when the cluster checks tokens).
    pub token: Option<String>,
    /// The certificate to trust, when the cluster serves TLS.
    pub root_certificate: Option<reqwest::Certificate>,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            pageservers: 3,
            random_clients: 2,
            active_shards: 24,
            ops_per_shard: 60,
            request_timeout: Duration::from_secs(15),
            pageserver_restart_every: Duration::from_secs(20),
            token: None,
            root_certificate: None,
        }
    }
}

/// What the operator tells a pageserver.
#[derive(Debug)]
enum Notice {
    Hold(TenantShardId, u32),
    Drop(TenantShardId),
}

/// The shards in use, their remaining budgets, and those waiting to be retired.
struct Shards {
    rng: ChaCha8Rng,
    salt: u64,
    next: u64,
    active: Vec<TenantShardId>,
    budget: BTreeMap<TenantShardId, u32>,
    retiring: VecDeque<TenantShardId>,
    ops_per_shard: u32,
    every: BTreeSet<TenantShardId>,
}

impl Shards {
    fn new(seed: u64, active: usize, ops_per_shard: u32) -> Shards {
        let mut shards = Shards {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5a4d),
            salt: seed,
            next: 0,
            active: Vec::new(),
            budget: BTreeMap::new(),
            retiring: VecDeque::new(),
            ops_per_shard,
            every: BTreeSet::new(),
        };
        for _ in 0..active {
            shards.fresh();
        }
        shards
    }

    /// A new shard id: the seed and a counter, and every third tenant sharded (four
    /// shards, this one chosen by the counter) so both id forms are exercised.
    fn fresh(&mut self) {
        let n = self.next;
        self.next += 1;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.salt.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        bytes[0] = 0xc4;
        let tenant = TenantId::from_bytes(bytes);
        let shard = if n % 3 == 2 {
            TenantShardId::sharded(tenant, (n % 4) as u8, 4).expect("number below count")
        } else {
            TenantShardId::unsharded(tenant)
        };
        self.active.push(shard);
        self.budget.insert(shard, self.ops_per_shard);
        self.every.insert(shard);
    }

    /// An active shard for one more operation; one that used its budget is retired.
    fn pick(&mut self) -> TenantShardId {
        let i = self.rng.gen_range(0..self.active.len());
        let shard = self.active[i];
        let left = self
            .budget
            .get_mut(&shard)
            .expect("active shards have budgets");
        *left -= 1;
        if *left == 0 {
            self.active.swap_remove(i);
            self.budget.remove(&shard);
            self.retiring.push_back(shard);
            self.fresh();
        }
        shard
    }
}

/// What a traffic client shares with the others.
#[derive(Clone)]
struct Shared {
    endpoints: Endpoints,
    history: History,
    stop: Arc<AtomicBool>,
    shards: Arc<Mutex<Shards>>,
    http: reqwest::Client,
    timeout: Duration,
    token: Option<String>,
}

/// One sequential client: records every attempt and picks a replica per attempt.
struct Caller {
    name: String,
    rng: ChaCha8Rng,
    shared: Shared,
}

impl Caller {
    fn new(name: impl Into<String>, seed: u64, shared: Shared) -> Caller {
        let name = name.into();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&name, &mut hasher);
        let stream = std::hash::Hasher::finish(&hasher);
        Caller {
            name,
            rng: ChaCha8Rng::seed_from_u64(seed ^ stream),
            shared,
        }
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Sends `request` once to a random replica and records it.
    async fn send(&mut self, request: Request) -> Outcome {
        let endpoints = self.shared.endpoints.get();
        let (via, url) = endpoints[self.rng.gen_range(0..endpoints.len())].clone();
        let client = Client::with_http(url, self.shared.http.clone())
            .with_timeout(self.shared.timeout)
            .with_token(self.shared.token.clone());
        let call = self.shared.history.begin(&self.name, via, request.clone());
        let outcome = execute(&client, &request).await;
        self.shared.history.end(call, outcome.clone());
        outcome
    }

    /// Sends `request` until it is answered (or refused), backing off like a pageserver;
    /// `None` if the run stopped first.
    async fn send_until_answered(&mut self, request: Request) -> Option<Outcome> {
        let mut pause = Duration::from_millis(100);
        loop {
            let outcome = self.send(request.clone()).await;
            if matches!(outcome, Outcome::Ok { .. } | Outcome::Refused { .. }) {
                return Some(outcome);
            }
            if self.stopped() {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = pause.mul_f64(1.1).min(Duration::from_secs(1));
        }
    }

    async fn pause(&mut self, min_ms: u64, max_ms: u64) {
        let ms = self.rng.gen_range(min_ms..=max_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn pick_shard(&self) -> TenantShardId {
        self.shared.shards.lock().expect("shards lock").pick()
    }
}

/// Sends one request through the typed client and turns the result into an outcome.
pub async fn execute(client: &Client, request: &Request) -> Outcome {
    let result = match request {
        Request::Attach {
            shard,
            node,
            generation_override,
        } => client
            .attach_hook(*shard, *node, *generation_override)
            .await
            .map(|generation| Answer::Generation { generation }),
        Request::Migrate { shard, node } => client
            .migrate(*shard, *node)
            .await
            .map(|generation| Answer::Migrated { generation }),
        Request::ReAttach { node } => client
            .re_attach(*node, Some(registration(*node)))
            .await
            .and_then(|response| {
                let tenants = response
                    .tenants
                    .into_iter()
                    .map(|t| match (t.r#gen, t.mode) {
                        // Every shard this controller re-attaches is attached, alone.
                        (Some(g), LocationMode::AttachedSingle) => Ok((t.id, g)),
                        (generation, mode) => Err(client::ClientError::Decode {
                            url: client.base_url().to_owned(),
                            reason: format!(
                                "re-attach answered generation {generation:?} in mode {mode:?} for {}",
                                t.id
                            ),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Answer::ReAttached { tenants })
            }),
        Request::Validate { tenants } => {
            client
                .validate(tenants)
                .await
                .map(|response| Answer::Validated {
                    tenants: response
                        .tenants
                        .into_iter()
                        .map(|t| (t.id, t.valid))
                        .collect(),
                })
        }
        Request::Inspect { shard } => client
            .inspect(*shard)
            .await
            .map(|attachment| Answer::Attachment { attachment }),
    };
    match result {
        Ok(answer) => Outcome::Ok { answer },
        Err(e) => Outcome::from_error(&e),
    }
}

/// The registration a simulated pageserver sends with its re-attach.
pub fn registration(node: NodeId) -> NodeRegisterRequest {
    let address = crate::history::pageserver_address(node);
    NodeRegisterRequest {
        node_id: node,
        listen_pg_addr: address.listen_pg_addr,
        listen_pg_port: address.listen_pg_port,
        listen_http_addr: address.listen_http_addr,
        listen_http_port: address.listen_http_port,
        availability_zone_id: None,
    }
}

/// Running traffic; [`Traffic::stop`] ends it.
pub struct Traffic {
    shared: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(endpoints: Endpoints, history: History, config: TrafficConfig) -> Traffic {
        let shared = Shared {
            endpoints,
            history,
            stop: Arc::new(AtomicBool::new(false)),
            shards: Arc::new(Mutex::new(Shards::new(
                config.seed,
                config.active_shards,
                config.ops_per_shard,
            ))),
            http: crate::cluster::http_client(config.root_certificate.clone())
                .expect("a reqwest client builds"),
            timeout: config.request_timeout,
            token: config.token.clone(),
        };
        let mut tasks = Vec::new();
        let mut inboxes = BTreeMap::new();
        for p in 1..=config.pageservers {
            let (tx, rx) = mpsc::unbounded_channel();
            inboxes.insert(NodeId(p), tx);
            let caller = Caller::new(format!("pageserver-{p}"), config.seed, shared.clone());
            tasks.push(tokio::spawn(pageserver(
                caller,
                NodeId(p),
                rx,
                config.pageserver_restart_every,
            )));
        }
        let pageservers: Vec<NodeId> = inboxes.keys().copied().collect();
        let operator_caller = Caller::new("operator", config.seed, shared.clone());
        tasks.push(tokio::spawn(operator(operator_caller, inboxes)));
        for c in 1..=config.random_clients {
            let caller = Caller::new(format!("random-{c}"), config.seed, shared.clone());
            tasks.push(tokio::spawn(random_client(caller, pageservers.clone())));
        }
        Traffic { shared, tasks }
    }

    /// Every shard the traffic has used so far.
    pub fn shards(&self) -> BTreeSet<TenantShardId> {
        self.shared
            .shards
            .lock()
            .expect("shards lock")
            .every
            .clone()
    }

    /// Stops the clients; each finishes (or abandons) its current call.
    pub async fn stop(self) -> BTreeSet<TenantShardId> {
        self.shared.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a traffic client panicked");
            }
        }
        let shards = self.shared.shards.lock().expect("shards lock");
        shards.every.clone()
    }
}

const VALIDATE_CHUNK: usize = 128;

async fn pageserver(
    mut caller: Caller,
    node: NodeId,
    mut inbox: mpsc::UnboundedReceiver<Notice>,
    restart_every: Duration,
) {
    let mut held: BTreeMap<TenantShardId, u32> = BTreeMap::new();
    let mut restart = true;
    while !caller.stopped() {
        while let Ok(notice) = inbox.try_recv() {
            match notice {
                Notice::Hold(shard, generation) => {
                    held.insert(shard, generation);
                }
                Notice::Drop(shard) => {
                    held.remove(&shard);
                }
            }
        }
        if restart {
            // Startup: nothing happens before a re-attach succeeds.
            match caller.send_until_answered(Request::ReAttach { node }).await {
                Some(Outcome::Ok {
                    answer: Answer::ReAttached { tenants },
                }) => held = tenants.into_iter().collect(),
                Some(_) => {}
                None => return,
            }
        }
        // Before deleting anything: validate what it holds, in the pageserver's chunks.
        let holding: Vec<(TenantShardId, u32)> = held.iter().map(|(s, g)| (*s, *g)).collect();
        for chunk in holding.chunks(VALIDATE_CHUNK) {
            let request = Request::Validate {
                tenants: chunk.to_vec(),
            };
            let Some(outcome) = caller.send_until_answered(request).await else {
                return;
            };
            if let Outcome::Ok {
                answer: Answer::Validated { tenants },
            } = outcome
            {
                let valid: BTreeSet<TenantShardId> = tenants
                    .iter()
                    .filter(|(_, valid)| *valid)
                    .map(|(s, _)| *s)
                    .collect();
                for (shard, _) in chunk {
                    if !valid.contains(shard) {
                        held.remove(shard);
                    }
                }
            }
        }
        caller.pause(150, 400).await;
        let restart_chance = 300.0 / restart_every.as_millis().max(1) as f64;
        restart = caller.rng.gen_bool(restart_chance.min(1.0));
    }
}

async fn operator(
    mut caller: Caller,
    pageservers: BTreeMap<NodeId, mpsc::UnboundedSender<Notice>>,
) {
    let nodes: Vec<NodeId> = pageservers.keys().copied().collect();
    let tell = |notice_for: Option<(NodeId, TenantShardId, u32)>, shard: TenantShardId| {
        for (node, inbox) in &pageservers {
            let notice = match notice_for {
                Some((to, _, generation)) if to == *node => Notice::Hold(shard, generation),
                _ => Notice::Drop(shard),
            };
            // A pageserver that stopped no longer reads its inbox; nothing to do.
            let _ = inbox.send(notice);
        }
    };
    while !caller.stopped() {
        caller.pause(80, 250).await;
        let retiring = caller
            .shared
            .shards
            .lock()
            .expect("shards lock")
            .retiring
            .pop_front();
        if let Some(shard) = retiring {
            // A retired shard is detached for good; pageservers drop it.
            let request = Request::Attach {
                shard,
                node: None,
                generation_override: None,
            };
            if caller.send_until_answered(request).await.is_none() {
                return;
            }
            tell(None, shard);
            continue;
        }
        let shard = caller.pick_shard();
        let node = nodes[caller.rng.gen_range(0..nodes.len())];
        let roll = caller.rng.gen_range(0..100);
        let request = match roll {
            0..=54 => Request::Attach {
                shard,
                node: Some(node),
                generation_override: None,
            },
            55..=79 => Request::Migrate { shard, node },
            80..=89 => Request::Attach {
                shard,
                node: None,
                generation_override: None,
            },
            _ => Request::Inspect { shard },
        };
        match caller.send(request).await {
            Outcome::Ok {
                answer:
                    Answer::Generation {
                        generation: Some(generation),
                    }
                    | Answer::Migrated { generation },
            } => tell(Some((node, shard, generation)), shard),
            Outcome::Ok {
                answer: Answer::Generation { generation: None },
            } => tell(None, shard),
            _ => {}
        }
    }
}

async fn random_client(mut caller: Caller, pageservers: Vec<NodeId>) {
    // The generation this client last saw per shard, to guess validates near it.
    let mut seen: BTreeMap<TenantShardId, u32> = BTreeMap::new();
    let stranger = NodeId(pageservers.len() as u64 + 1);
    while !caller.stopped() {
        caller.pause(20, 120).await;
        let shard = caller.pick_shard();
        let node = if caller.rng.gen_bool(0.2) {
            stranger
        } else {
            pageservers[caller.rng.gen_range(0..pageservers.len())]
        };
        let roll = caller.rng.gen_range(0..100);
        let request = match roll {
            0..=29 => Request::Attach {
                shard,
                node: Some(node),
                // Overrides only seed new shards; harmless on known ones.
                generation_override: caller.rng.gen_bool(0.05).then_some(1_000),
            },
            30..=39 => Request::Attach {
                shard,
                node: None,
                generation_override: None,
            },
            40..=49 => Request::Migrate { shard, node },
            50..=74 => {
                let around = seen.get(&shard).copied().unwrap_or(1);
                let mut tenants = vec![(
                    shard,
                    around.saturating_sub(1).max(1) + caller.rng.gen_range(0..3),
                )];
                for _ in 0..caller.rng.gen_range(0..4) {
                    let other = caller.pick_shard();
                    let around = seen.get(&other).copied().unwrap_or(1);
                    tenants.push((other, around + caller.rng.gen_range(0..2)));
                }
                tenants.sort();
                tenants.dedup_by_key(|(s, _)| *s);
                Request::Validate { tenants }
            }
            75..=84 => Request::ReAttach { node },
            _ => Request::Inspect { shard },
        };
        if let Outcome::Ok { answer } = caller.send(request).await {
            match answer {
                Answer::Generation {
                    generation: Some(g),
                }
                | Answer::Migrated { generation: g } => {
                    seen.insert(shard, g);
                }
                Answer::ReAttached { tenants } => seen.extend(tenants),
                Answer::Attachment {
                    attachment: Some((g, _)),
                } => {
                    seen.insert(shard, g);
                }
                _ => {}
            }
        }
    }
}
