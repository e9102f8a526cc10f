//! Killing the leader under traffic loses no acknowledged generation, issues none twice,
//! and leaves no superseded generation valid.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pageserver_controller::client::Client;
use pageserver_controller::domain::{NodeId, TenantShardId};

use crate::support::{shard, wait_for, TestCluster, DEADLINE};

/// An acknowledged attach: the generation, and when the call started and returned.
#[derive(Debug, Clone, Copy)]
struct Ack {
    generation: u32,
    called: Instant,
    returned: Instant,
}

type Acks = Arc<Mutex<BTreeMap<TenantShardId, Vec<Ack>>>>;

/// Sequential clients attaching random shards through random replicas until stopped.
fn start_traffic(
    urls: Arc<Mutex<Vec<String>>>,
    acks: Acks,
    stop: Arc<AtomicBool>,
    workers: u64,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..workers)
        .map(|worker| {
            let (urls, acks, stop) = (urls.clone(), acks.clone(), stop.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                let mut i = worker;
                while !stop.load(Ordering::SeqCst) {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let target = {
                        let urls = urls.lock().unwrap();
                        urls[(i >> 33) as usize % urls.len()].clone()
                    };
                    let shard = shard(((i >> 40) % 12) as u32);
                    let node = NodeId(1 + (i >> 50) % 3);
                    let client = Client::new(target).with_timeout(Duration::from_secs(15));
                    let called = Instant::now();
                    // Errors are indeterminate (the write may or may not have happened).
                    if let Ok(Some(generation)) = client.attach_hook(shard, Some(node), None).await
                    {
                        let returned = Instant::now();
                        acks.lock().unwrap().entry(shard).or_default().push(Ack {
                            generation,
                            called,
                            returned,
                        });
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect()
}

async fn successes_after(acks: &Acks, since: Instant, at_least: usize) {
    wait_for(
        &format!("{at_least} successful attaches after the fault"),
        DEADLINE,
        || async move {
            let n = acks
                .lock()
                .unwrap()
                .values()
                .flatten()
                .filter(|a| a.called > since)
                .count();
            (n >= at_least).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_attaches_survive_leader_kills_and_no_generation_repeats() {
    let mut cluster = TestCluster::start(3).await;
    let urls = Arc::new(Mutex::new(
        cluster
            .running()
            .iter()
            .map(|id| cluster.url(*id))
            .collect::<Vec<_>>(),
    ));
    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_traffic(urls.clone(), acks.clone(), stop.clone(), 6);
    successes_after(&acks, Instant::now() - Duration::from_secs(60), 20).await;

    for round in 0..2 {
        let leader = cluster.wait_for_leader().await;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let new_leader = cluster.wait_for_leader().await;
        assert_ne!(new_leader, leader, "round {round}: a new leader took over");
        successes_after(&acks, killed_at, 20).await;
        cluster.restart(leader).await;
        let committed = cluster
            .status_of(new_leader)
            .await
            .and_then(|s| s.committed_index)
            .unwrap_or(0);
        cluster.wait_applied(leader, committed).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    assert!(total > 60, "only {total} attaches succeeded");

    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    let acks = acks.lock().unwrap().clone();
    for (shard, acked) in &acks {
        // Never the same generation twice.
        let mut generations: Vec<u32> = acked.iter().map(|a| a.generation).collect();
        generations.sort_unstable();
        let before = generations.len();
        generations.dedup();
        assert_eq!(
            generations.len(),
            before,
            "{shard}: a generation was issued twice: {acked:?}"
        );
        // Real-time order: an attach that returned before another began got a lower one.
        for a in acked {
            for b in acked {
                if a.returned < b.called {
                    assert!(
                        a.generation < b.generation,
                        "{shard}: {a:?} returned before {b:?} began but is not lower"
                    );
                }
            }
        }
        // Nothing acknowledged was lost.
        let highest = *generations.last().unwrap();
        let (current, _) = client
            .inspect(*shard)
            .await
            .unwrap()
            .expect("attached shard");
        assert!(
            current >= highest,
            "{shard}: current generation {current} is below acknowledged {highest}"
        );
        // Superseded generations are not valid; through a follower too.
        let follower = cluster.other_than(leader);
        let queries: Vec<(TenantShardId, u32)> = generations.iter().map(|g| (*shard, *g)).collect();
        let answers = cluster.client(follower).validate(&queries).await.unwrap();
        for (answer, generation) in answers.tenants.iter().zip(&generations) {
            assert_eq!(
                answer.valid,
                *generation == current,
                "{shard}: validate({generation}) with current {current}"
            );
        }
    }
}

/// A follower does not wait out its forward timeout on a leader that froze: once it sees
/// another leader, the write it forwarded gets a 503 saying its fate is unknown, and the
/// next write goes to the new leader. (The timeouts here are beyond the client's 20 s
/// patience, so only giving up early answers; the wait for a leader is as long, so a
/// slow election on a busy machine is waited for.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_frozen_leader_is_given_up_once_another_leads() {
    let cluster = TestCluster::start_with(
        3,
        &["--write-timeout-ms", "60000", "--leader-wait-ms", "60000"],
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(cluster.other_than(leader));
    let first = client.attach_hook(shard(1), Some(NodeId(1)), None).await;
    assert_eq!(first.unwrap(), Some(1));

    cluster.freeze(leader, true);
    let abandoned = client
        .attach_hook(shard(1), Some(NodeId(2)), None)
        .await
        .unwrap_err();
    assert_eq!(abandoned.status(), Some(503), "{abandoned}");
    assert!(!abandoned.not_applied(), "its fate is unknown: {abandoned}");
    assert!(
        abandoned
            .to_string()
            .contains("lost its leadership before answering"),
        "given up when another replica led, not at the timeout: {abandoned}"
    );
    let next = attached_eventually(&client, shard(1), 3).await;
    assert!(next >= 2, "the generation moved on from 1 (got {next})");

    cluster.freeze(leader, false);
    cluster.wait_caught_up(leader).await;
    let (current, node) = cluster
        .client(leader)
        .inspect(shard(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((current, node), (next, NodeId(3)));
}

/// A read on a follower asks the leader for a read index. If that leader froze, the read
/// does not wait out its deadline: once another replica leads, it asks that one. (The
/// deadlines here are far beyond the client's patience, so only moving on answers; the
/// wait for a leader is as long, so a slow election on a busy machine is waited for.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_follower_moves_on_from_a_frozen_leader() {
    let cluster = TestCluster::start_with(
        3,
        &[
            "--read-timeout-ms",
            "60000",
            "--write-timeout-ms",
            "60000",
            "--leader-wait-ms",
            "60000",
        ],
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    let client = cluster.client(follower);
    let first = client.attach_hook(shard(1), Some(NodeId(1)), None).await;
    assert_eq!(first.unwrap(), Some(1));
    // The follower has applied the attach and knows the leader.
    let answer = client.validate(&[(shard(1), 1)]).await.unwrap();
    assert!(answer.tenants[0].valid);

    cluster.freeze(leader, true);
    let answer = client
        .validate(&[(shard(1), 1)])
        .await
        .expect("answered once another replica leads");
    assert!(answer.tenants[0].valid, "{answer:?}");
    let now_leading = cluster.status_of(follower).await.and_then(|s| s.leader);
    assert!(
        now_leading.is_some_and(|l| l != leader),
        "answered after another replica took over (leader now: {now_leading:?})"
    );
    cluster.freeze(leader, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_requests_fail_clearly_and_recover() {
    let mut cluster = TestCluster::start_with(
        3,
        &["--write-timeout-ms", "1500", "--leader-wait-ms", "1500"],
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    assert_eq!(
        client
            .attach_hook(shard(1), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(1)
    );
    for id in cluster.running() {
        if id != leader {
            cluster.kill(id);
        }
    }
    let started = Instant::now();
    let validate = client.validate(&[(shard(1), 1)]).await.unwrap_err();
    assert_eq!(validate.status(), Some(503), "{validate}");
    let attach = client
        .attach_hook(shard(1), Some(NodeId(2)), None)
        .await
        .unwrap_err();
    assert_eq!(attach.status(), Some(503), "{attach}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failing took {:?}",
        started.elapsed()
    );
    assert!(
        attach.to_string().contains("may or may not") || attach.to_string().contains("quorum"),
        "the message says what is known: {attach}"
    );
    // Once the leader has gone twice the lease without hearing from a quorum it takes no
    // new write, and says so: a 503 marked "nothing applied" (the write before may have
    // been in flight when it noticed, so it may be "may or may not").
    let mut answers = Vec::new();
    let refused = loop {
        let e = client
            .attach_hook(shard(1), Some(NodeId(3)), None)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(503), "{e}");
        if e.not_applied() {
            break e;
        }
        answers.push(e.to_string());
        assert!(answers.len() < 5, "never refused plainly: {answers:#?}");
    };
    assert!(
        refused.to_string().contains("has not heard from a quorum"),
        "the message says why: {refused}"
    );

    let down: Vec<u64> = cluster
        .replicas
        .keys()
        .copied()
        .filter(|id| !cluster.is_running(*id))
        .collect();
    cluster.restart(down[0]).await;
    cluster.wait_for_leader().await;
    let after = attached_eventually(&client, shard(1), 3).await;
    assert!(after >= 2, "the generation moved on from 1 (got {after})");
    let (current, node) = client.inspect(shard(1)).await.unwrap().unwrap();
    assert_eq!((current, node), (after, NodeId(3)));
}

/// The generation of the first attach of `shard` to `node` through `client` that
/// succeeds, retrying until [`DEADLINE`].
async fn attached_eventually(client: &Client, shard: TenantShardId, node: u64) -> u32 {
    wait_for("an attach to succeed", DEADLINE, || async move {
        client
            .attach_hook(shard, Some(NodeId(node)), None)
            .await
            .ok()
            .flatten()
    })
    .await
}
