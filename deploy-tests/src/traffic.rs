//! Pageserver-shaped traffic: sequential clients that attach tenant shards and validate
//! the generation they got, retrying like a pageserver (everything but a 4xx, with
//! backoff, until a deadline) and sending each try to the next replica, as a client
//! behind a Kubernetes Service would land on any pod. Every try is recorded in a
//! [`History`]; a call that still fails after its retries is a *client failure*, which
//! the deployment must never cause.
//!
//! Each client owns some shards (only it attaches them, so its validate of the generation
//! it just got must say valid unless one of its own retried attaches landed late) and
//! shares others with every client (concurrent attaches that supersede each other).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pageserver_controller::client::{self, Client};
use pageserver_controller::domain::{NodeId, TenantId, TenantShardId};

use chaos::history::{Answer, History, Outcome, Request};

/// The replicas clients may send to: (replica id, base URL). Tests update it as replicas
/// come and go, as a Service's endpoints would change.
#[derive(Clone, Default)]
pub struct Endpoints(Arc<RwLock<Vec<(u64, String)>>>);

impl Endpoints {
    pub fn set(&self, endpoints: Vec<(u64, String)>) {
        *self.0.write().expect("endpoints lock") = endpoints;
    }

    pub fn get(&self) -> Vec<(u64, String)> {
        self.0.read().expect("endpoints lock").clone()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub clients: u64,
    pub own_shards: u32,
    pub shared_shards: u32,
    /// How long one call is retried before it counts as a client failure.
    pub retry_deadline: Duration,
    /// Pause between a client's calls.
    pub pause: Duration,
    /// Bearer token sent with every request.
    pub token: Option<String>,
}

/// A shard id from small numbers, readable in failure messages.
pub fn shard(owner: u64, n: u32) -> TenantShardId {
    let mut bytes = [0u8; 16];
    bytes[0] = 0xd0;
    bytes[1..9].copy_from_slice(&owner.to_be_bytes());
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    TenantShardId::unsharded(TenantId::from_bytes(bytes))
}

/// Shards shared by every client.
const SHARED: u64 = u64::MAX;

/// One sequential client: its name, a connection pool, and where its next try goes.
struct Caller {
    name: String,
    http: reqwest::Client,
    endpoints: Endpoints,
    history: History,
    failures: Arc<Mutex<Vec<String>>>,
    token: Option<String>,
    retry_deadline: Duration,
    next: usize,
}

impl Caller {
    fn new(name: String, traffic: &Shared, retry_deadline: Duration, first: usize) -> Caller {
        Caller {
            name,
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .expect("a default reqwest client builds"),
            endpoints: traffic.endpoints.clone(),
            history: traffic.history.clone(),
            failures: traffic.failures.clone(),
            token: traffic.token.clone(),
            retry_deadline,
            next: first,
        }
    }

    /// Calls `send` until it succeeds or the retry deadline passed, each try through the
    /// next endpoint, recording every try; `None` (and a recorded failure) if it failed.
    async fn call<T, F, Fut>(
        &mut self,
        request: Request,
        answer: impl Fn(&T) -> Answer,
        send: F,
    ) -> Option<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = client::Result<T>>,
    {
        let send = &send;
        let answer = &answer;
        let request_ref = &request;
        let this = &*self;
        let next = std::sync::atomic::AtomicUsize::new(self.next);
        let result = client::retry(
            self.retry_deadline,
            Duration::from_millis(100),
            Duration::from_secs(1),
            || {
                let endpoints = this.endpoints.get();
                let turn = next.fetch_add(1, Ordering::Relaxed);
                let (via, url) = endpoints[turn % endpoints.len()].clone();
                let client = Client::with_http(url, this.http.clone())
                    .with_token(this.token.clone())
                    .with_timeout(Duration::from_secs(10));
                async move {
                    let call = this.history.begin(&this.name, via, request_ref.clone());
                    let result = send(client).await;
                    let outcome = match &result {
                        Ok(value) => Outcome::Ok {
                            answer: answer(value),
                        },
                        Err(e) => Outcome::from_error(e),
                    };
                    this.history.end(call, outcome);
                    result
                }
            },
        )
        .await;
        self.next = next.into_inner();
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.failures.lock().expect("failures lock").push(format!(
                    "{}: {request:?} failed after retrying for {:?}: {e}",
                    self.name, self.retry_deadline
                ));
                None
            }
        }
    }

    async fn attach(&mut self, shard: TenantShardId, node: NodeId) -> Option<u32> {
        let generation = self
            .call(
                Request::Attach {
                    shard,
                    node: Some(node),
                    generation_override: None,
                },
                |g: &Option<u32>| Answer::Generation { generation: *g },
                |client| async move { client.attach_hook(shard, Some(node), None).await },
            )
            .await?;
        if generation.is_none() {
            self.fail(format!(
                "attach of {shard} to {node} answered no generation"
            ));
        }
        generation
    }

    async fn validate(&mut self, shard: TenantShardId, generation: u32) -> Option<bool> {
        let answer = |response: &Option<bool>| Answer::Validated {
            tenants: response.iter().map(|valid| (shard, *valid)).collect(),
        };
        let valid = self
            .call(
                Request::Validate {
                    tenants: vec![(shard, generation)],
                },
                answer,
                |client| async move {
                    let response = client.validate(&[(shard, generation)]).await?;
                    Ok(response
                        .tenants
                        .iter()
                        .find(|t| t.id == shard)
                        .map(|t| t.valid))
                },
            )
            .await?;
        if valid.is_none() {
            self.fail(format!(
                "validate of {shard}:{generation} omitted the shard, as if it were unknown"
            ));
        }
        valid
    }

    async fn inspect(&mut self, shard: TenantShardId) -> Option<Option<(u32, NodeId)>> {
        self.call(
            Request::Inspect { shard },
            |attachment: &Option<(u32, NodeId)>| Answer::Attachment {
                attachment: *attachment,
            },
            |client| async move { client.inspect(shard).await },
        )
        .await
    }

    fn fail(&self, failure: String) {
        self.failures.lock().expect("failures lock").push(failure);
    }
}

struct Shared {
    endpoints: Endpoints,
    history: History,
    failures: Arc<Mutex<Vec<String>>>,
    token: Option<String>,
}

/// Running traffic; [`Traffic::stop`] ends it.
pub struct Traffic {
    shared: Shared,
    config: Config,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acks: Arc<Mutex<Vec<(TenantShardId, u32)>>>,
}

impl Traffic {
    pub fn start(endpoints: Endpoints, history: History, config: Config) -> Traffic {
        let shared = Shared {
            endpoints,
            history,
            failures: Arc::default(),
            token: config.token.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<Vec<(TenantShardId, u32)>>> = Arc::default();
        let mut tasks = Vec::new();
        for c in 0..config.clients {
            let mut caller = Caller::new(
                format!("pageserver-{}", c + 1),
                &shared,
                config.retry_deadline,
                c as usize,
            );
            let node = NodeId(c + 1);
            let shards: Vec<TenantShardId> = (0..config.own_shards)
                .map(|n| shard(c, n))
                .chain((0..config.shared_shards).map(|n| shard(SHARED, n)))
                .collect();
            let stop = stop.clone();
            let acks = acks.clone();
            let pause = config.pause;
            tasks.push(tokio::spawn(async move {
                'run: loop {
                    for shard in &shards {
                        if stop.load(Ordering::Relaxed) {
                            break 'run;
                        }
                        if let Some(generation) = caller.attach(*shard, node).await {
                            acks.lock().expect("acks lock").push((*shard, generation));
                            caller.validate(*shard, generation).await;
                        }
                        tokio::time::sleep(pause).await;
                    }
                }
            }));
        }
        Traffic {
            shared,
            config,
            stop,
            tasks,
            acks,
        }
    }

    /// Calls that failed after their retries, so far.
    pub fn failures(&self) -> Vec<String> {
        self.shared.failures.lock().expect("failures lock").clone()
    }

    /// Acknowledged attaches so far.
    pub fn acknowledged(&self) -> usize {
        self.acks.lock().expect("acks lock").len()
    }

    /// Waits until `more` attaches beyond the current count were acknowledged: proof that
    /// traffic flows (for example after a fault healed).
    pub async fn wait_for_progress(&self, more: usize, deadline: Duration) -> anyhow::Result<()> {
        let target = self.acknowledged() + more;
        let end = std::time::Instant::now() + deadline;
        while self.acknowledged() < target {
            if std::time::Instant::now() > end {
                anyhow::bail!(
                    "traffic made no progress: {} of {target} attaches acknowledged after {deadline:?}",
                    self.acknowledged()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Stops the clients (each finishes its current call), then reads every shard back
    /// through a `final` client: an inspect, and a validate of every generation
    /// acknowledged for it. The history then holds everything [`chaos::checker::check`]
    /// needs to prove no acknowledged generation was lost.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            if let Err(e) = task.await {
                self.shared
                    .failures
                    .lock()
                    .expect("failures lock")
                    .push(format!("a traffic client panicked: {e}"));
            }
        }
        let acks = self.acks.lock().expect("acks lock").clone();
        let mut caller = Caller::new("final".into(), &self.shared, self.config.retry_deadline, 0);
        let mut shards: Vec<TenantShardId> = acks.iter().map(|(s, _)| *s).collect();
        shards.sort();
        shards.dedup();
        for shard in shards {
            caller.inspect(shard).await;
            let mut generations: Vec<u32> = acks
                .iter()
                .filter(|(s, _)| *s == shard)
                .map(|(_, g)| *g)
                .collect();
            generations.sort_unstable();
            // The newest and a few superseded ones: enough to prove both directions.
            let take = generations.len().saturating_sub(4);
            for generation in generations.split_off(take) {
                caller.validate(shard, generation).await;
            }
        }
        self.shared.failures.lock().expect("failures lock").clone()
    }
}
