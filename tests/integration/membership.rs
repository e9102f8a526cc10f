//! Operators grow, shrink, repair and roll the cluster while pageservers keep calling.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pageserver_controller::api::types::StepDownResponse;
use pageserver_controller::client::{retry, Client};
use pageserver_controller::domain::NodeId;

use crate::support::{
    attach_range, free_port, hold_request_open, retried, run_binary, shard, wait_for, wait_ready,
    TestCluster, DEADLINE,
};

/// Clients that retry like pageservers; every call must eventually succeed.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Failures,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

/// Failed attempts (each retried), and the last one's error.
type Failures = Arc<Mutex<(u64, String)>>;

/// One call made like a pageserver makes it: retried until it succeeds or the deadline
/// passes, each attempt on the next replica (as behind a load balancer), every failed
/// attempt counted.
async fn like_a_pageserver<T, Fut>(
    mut next_client: impl FnMut() -> Client,
    failures: &Failures,
    call: impl Fn(Client) -> Fut,
) -> Result<T, pageserver_controller::client::ClientError>
where
    Fut: std::future::Future<Output = Result<T, pageserver_controller::client::ClientError>>,
{
    retry(
        DEADLINE,
        Duration::from_millis(50),
        Duration::from_millis(500),
        || {
            let attempt = call(next_client());
            async move {
                attempt.await.inspect_err(|e| {
                    let mut failures = failures.lock().unwrap();
                    failures.0 += 1;
                    failures.1 = e.to_string();
                })
            }
        },
    )
    .await
}

impl Traffic {
    fn start(urls: Arc<Mutex<Vec<String>>>, workers: u32) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed: Failures = Arc::default();
        let tasks = (0..workers)
            .map(|w| {
                let (urls, stop, ok) = (urls.clone(), stop.clone(), ok.clone());
                let failed = failed.clone();
                tokio::spawn(async move {
                    let mut i = 0u32;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let shard = shard(w * 1000 + i % 20);
                        let mut attempt = w as usize + i as usize;
                        let mut next_client = || {
                            attempt += 1;
                            let urls = urls.lock().unwrap();
                            Client::new(urls[attempt % urls.len()].clone())
                                .with_timeout(Duration::from_secs(15))
                        };
                        let generation =
                            like_a_pageserver(&mut next_client, &failed, |c| async move {
                                c.attach_hook(shard, Some(NodeId(1)), None).await
                            })
                            .await
                            .map_err(|e| format!("attach failed after retries: {e}"))?;
                        like_a_pageserver(&mut next_client, &failed, |c| async move {
                            c.validate(&[(shard, generation.unwrap_or(0))]).await
                        })
                        .await
                        .map_err(|e| format!("validate failed after retries: {e}"))?;
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Failed attempts so far, and the last one's error.
    fn failures(&self) -> (u64, String) {
        self.failed.lock().unwrap().clone()
    }

    async fn progress(&self, at_least: u64) {
        let target = self.ok.load(Ordering::SeqCst) + at_least;
        wait_for(
            &format!("{at_least} more successful calls"),
            DEADLINE,
            || async move { (self.ok.load(Ordering::SeqCst) >= target).then_some(()) },
        )
        .await;
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await
                .unwrap()
                .expect("no request may fail after retries");
        }
        self.ok.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_shrink_back_under_traffic() {
    let mut cluster = TestCluster::start(3).await;
    let urls = Arc::new(Mutex::new(
        (1..=3).map(|id| cluster.url(id)).collect::<Vec<_>>(),
    ));
    let traffic = Traffic::start(urls.clone(), 4);
    traffic.progress(10).await;

    // Growing costs no request: not one attempt fails while two members are added.
    let term = cluster.status_of(1).await.unwrap().term;
    let (failed_before, _) = traffic.failures();
    cluster.join(4, 1).await;
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
    cluster.join(5, 2).await;
    cluster.wait_for_voters(&[1, 2, 3, 4, 5]).await;
    urls.lock()
        .unwrap()
        .extend([cluster.url(4), cluster.url(5)]);
    traffic.progress(20).await;
    let (failed, last_error) = traffic.failures();
    let term_after = cluster.status_of(1).await.unwrap().term;
    if term_after == term {
        assert_eq!(
            failed, failed_before,
            "requests failed while the cluster grew (last: {last_error})"
        );
    } else {
        // An election the machine's load caused (heartbeats starved past the election
        // timeout) is not the membership change's doing; the failover tests cover it.
        eprintln!(
            "the leader changed while growing (term {term} -> {term_after}); not counting failures"
        );
    }

    // Shrink: remove the leader first (it hands leadership over), then another.
    let leader = cluster.wait_for_leader().await;
    let status = cluster
        .client(4)
        .remove_member(leader, false)
        .await
        .unwrap();
    assert!(!status.members.iter().any(|m| m.id == leader), "{status:?}");
    let other = [1, 2, 3, 4, 5]
        .into_iter()
        .find(|id| *id != leader && *id != status.leader.unwrap())
        .unwrap();
    cluster
        .client(status.leader.unwrap())
        .remove_member(other, false)
        .await
        .unwrap();
    urls.lock()
        .unwrap()
        .retain(|u| *u != cluster.url(leader) && *u != cluster.url(other));
    let mut remaining: Vec<u64> = [1, 2, 3, 4, 5]
        .into_iter()
        .filter(|id| *id != leader && *id != other)
        .collect();
    remaining.sort_unstable();
    cluster.wait_for_voters(&remaining).await;
    traffic.progress(20).await;
    cluster.stop(leader);
    cluster.stop(other);
    traffic.progress(10).await;
    let done = traffic.finish().await;
    assert!(done >= 60, "{done} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_was_lost_is_replaced_and_catches_up_from_a_snapshot() {
    let mut cluster = TestCluster::start_with(
        3,
        &["--snapshot-every", "20", "--snapshot-keep-entries", "5"],
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let lost = cluster.other_than(leader);
    let client = cluster.client(leader);
    attach_range(&client, 0..30, 1).await;
    cluster.kill(lost);
    cluster.wipe(lost);
    // Runbook: remove it, then add it back with an empty data dir through --join.
    cluster
        .client(leader)
        .remove_member(lost, false)
        .await
        .unwrap();
    cluster.wait_for_voters(&cluster.running()).await;
    attach_range(&client, 0..30, 2).await;
    cluster.forget(lost);
    cluster.join(lost, leader).await;
    let mut all = cluster.running();
    all.sort_unstable();
    cluster.wait_for_voters(&all).await;
    cluster.wait_caught_up(lost).await;
    assert!(
        cluster.log_of(lost).contains("installed snapshot"),
        "caught up from a snapshot"
    );

    // The replaced member carries the cluster with one of the others.
    cluster.kill(leader);
    cluster.wait_for_leader().await;
    let via_lost = cluster.client(lost);
    for i in 0..30 {
        assert_eq!(
            retried(|| via_lost.inspect(shard(i))).await.unwrap(),
            Some((2, NodeId(2)))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request_and_when_the_leader_is_stopped() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let target = cluster.other_than(leader);
    let status = retried(|| {
        let client = cluster.client(leader);
        async move { client.transfer_leader(target).await }
    })
    .await
    .unwrap();
    assert_eq!(status.leader, Some(target));
    assert_eq!(cluster.wait_for_leader().await, target);

    // SIGTERM on the leader hands leadership over before the replica exits.
    let client = cluster.client(target);
    client
        .attach_hook(shard(1), Some(NodeId(1)), None)
        .await
        .unwrap();
    cluster.stop(target);
    assert!(
        cluster.log_of(target).contains("leadership handed over"),
        "{}",
        cluster.log_of(target)
    );
    let next = cluster.wait_for_leader().await;
    assert_ne!(next, target);
    assert_eq!(
        cluster.client(next).inspect(shard(1)).await.unwrap(),
        Some((1, NodeId(1)))
    );
}

/// `cluster step-down`, a pod's preStop hook: the replica asked hands leadership away if
/// it leads, does nothing if it does not, and the command waits `--then-wait-s` either
/// way, also when the replica cannot be reached (the pod must still leave its Service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_moves_leadership_off_the_replica_asked_and_nothing_else() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..2, 1).await;
    let cli = |args: Vec<String>| async move {
        let started = std::time::Instant::now();
        let (ok, text) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_binary(&args)
        })
        .await
        .unwrap();
        (ok, text, started.elapsed())
    };
    let step_down = |id: u64, more: &[&str]| {
        let mut args: Vec<String> = ["cluster", "step-down", "--url"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.push(cluster.url(id));
        args.extend(more.iter().map(|a| a.to_string()));
        args
    };

    let follower = cluster.other_than(leader);
    let (ok, text, took) = cli(step_down(follower, &["--then-wait-s", "1"])).await;
    assert!(ok, "{text}");
    assert!(text.contains("does not lead"), "{text}");
    assert!(took >= Duration::from_secs(1), "waited only {took:?}");
    assert_eq!(
        cluster.wait_for_leader().await,
        leader,
        "a follower's step-down moved nothing"
    );

    // The leader hands over. Should an election have moved leadership meanwhile, ask
    // the new leader: the test is about a replica that leads when asked.
    let (old, answer) = wait_for("a leader to step down", DEADLINE, || {
        let cluster = &cluster;
        async move {
            let leader = cluster.wait_for_leader().await;
            let (ok, text, _) = cli(step_down(leader, &["--json"])).await;
            assert!(ok, "{text}");
            let answer: StepDownResponse = serde_json::from_str(&text).expect(&text);
            assert_eq!(answer.replica_id, leader);
            answer.was_leader.then_some((leader, answer))
        }
    })
    .await;
    let new = answer.leader.expect("a new leader");
    assert_ne!(new, old, "{answer:?}");
    assert_ne!(cluster.wait_for_leader().await, old);
    for (i, tenant) in (0..2).map(shard).enumerate() {
        let held = cluster.client(new).inspect(tenant).await.unwrap();
        assert_eq!(held, Some((1, NodeId(1))), "shard {i} after the step-down");
    }
    assert!(
        cluster.log_of(old).contains("asked to step down"),
        "{}",
        cluster.log_of(old)
    );

    // Nobody answers: the command fails, after the wait all the same.
    let nobody = format!("http://127.0.0.1:{}", crate::support::free_port());
    let (ok, text, took) = cli(vec![
        "cluster".into(),
        "step-down".into(),
        "--url".into(),
        nobody,
        "--then-wait-s".into(),
        "1".into(),
    ])
    .await;
    assert!(!ok && text.contains("asking"), "{text}");
    assert!(took >= Duration::from_secs(1), "waited only {took:?}");
}

/// A one-replica cluster (a test bed, or what `recover` leaves before members are added
/// back) has no one to hand leadership to: the preStop hook must still succeed at once,
/// say so, and leave the replica leading and writable rather than leaderless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_voter_asked_to_step_down_keeps_leading_and_says_so() {
    let cluster = TestCluster::start(1).await;
    let leader = cluster.wait_for_leader().await;
    assert_eq!(leader, 1);
    let client = cluster.client(leader);
    attach_range(&client, 0..1, 1).await;

    let answer = client.step_down().await.expect("a step-down answer");
    assert_eq!(
        answer,
        StepDownResponse {
            replica_id: 1,
            was_leader: true,
            leader: Some(1),
        }
    );
    let (ok, text) = tokio::task::spawn_blocking({
        let url = cluster.url(leader);
        move || run_binary(&["cluster", "step-down", "--url", &url])
    })
    .await
    .unwrap();
    assert!(ok && text.contains("no other voter"), "{text}");

    // Still the leader, and still taking writes in the same term.
    let before = client.cluster_status().await.unwrap();
    let generation = client
        .attach_hook(shard(0), Some(NodeId(1)), None)
        .await
        .expect("an attach after the step-down");
    assert_eq!(generation, Some(2));
    let after = client.cluster_status().await.unwrap();
    assert_eq!((after.leader, after.term), (Some(1), before.term));
}

/// A leader stopping on SIGTERM that could not hand over (here: no time to) stops its
/// heartbeats before it drains, so the others elect a leader during the drain rather
/// than after the process exits (bug 51).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_that_could_not_hand_over_lets_the_others_elect_while_it_drains() {
    let mut cluster = TestCluster::start_with(3, &["--handoff-timeout-ms", "1"]).await;
    let leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..4, 1).await;
    // Keeps the drain open until its bound (5 s), several election timeouts.
    let held = hold_request_open(&cluster.url(leader)).await;
    cluster.terminate(leader);
    cluster
        .wait_for_log(leader, "still leading after the handover attempts", 1)
        .await;
    let successor = another_leader(&cluster, leader).await;
    assert!(
        !cluster.has_exited(leader),
        "replica {successor} was elected only after replica {leader} exited"
    );
    drop(held);
}

/// Waits until a replica other than `leader` leads, and returns it.
async fn another_leader(cluster: &TestCluster, leader: u64) -> u64 {
    wait_for("another replica to lead", DEADLINE, || async move {
        let leading = cluster.leader_now().await?;
        (leading != leader).then_some(leading)
    })
    .await
}

/// After handing leadership away on SIGTERM, a replica drains its in-flight requests
/// with its listener closed, so the new leader's heartbeats no longer reach it. Were it
/// still allowed to campaign, it would raise its term every election timeout of the drain
/// and come back with a term that deposes its successor (bug 18 in RELIABILITY.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_draining_after_handing_leadership_away_never_campaigns() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..4, 1).await;

    // A request whose body never arrives keeps the drain open until its bound (5 s,
    // several election timeouts); it is in flight before SIGTERM.
    let held = hold_request_open(&cluster.url(leader)).await;

    cluster.terminate(leader);
    let successor = another_leader(&cluster, leader).await;
    let term = cluster
        .status_of(successor)
        .await
        .expect("successor status")
        .term;
    wait_for("the old leader to drain and exit", DEADLINE, || {
        let exited = cluster.has_exited(leader);
        async move { exited.then_some(()) }
    })
    .await;

    let log = cluster.log_of(leader);
    let (_, drain) = log
        .split_once("draining in-flight requests")
        .unwrap_or_else(|| panic!("the old leader drained:\n{log}"));
    let campaigns: Vec<_> = drain
        .lines()
        .filter(|line| line.contains("raft role"))
        .filter(|line| {
            let same_term = line.split_whitespace().any(|f| f == format!("term={term}"));
            line.contains("role=candidate") || line.contains("role=leader") || !same_term
        })
        .collect();
    assert!(
        campaigns.is_empty(),
        "while draining, replica {leader} campaigned or left the successor's term {term}:\n{}",
        campaigns.join("\n")
    );
    drop(held);

    // Back on its data dir, it starts in no later term than its successor's: a replica
    // that had campaigned while draining would come back with a higher one and depose
    // the successor. (Read from its first log line of the restart rather than from the
    // cluster, whose term a spurious election on a busy machine may raise meanwhile.)
    let before_restart = cluster.log_of(leader).len();
    cluster.restart(leader).await;
    cluster.wait_caught_up(leader).await;
    let log = cluster.log_of(leader);
    let started_in = log[before_restart..]
        .lines()
        .find(|line| line.contains("raft role"))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("term=")?.parse::<u64>().ok())
        })
        .unwrap_or_else(|| panic!("no raft role line after the restart:\n{log}"));
    assert!(
        started_in <= term,
        "replica {leader} restarted in term {started_in}, past its successor's {term}"
    );
}

/// With five voters the new leader needs a vote from a follower, which refuses while it
/// still hears from the old leader. Reads kept flowing during the handover renewed those
/// leases: the target's campaign failed, deposed the old leader, and elections followed
/// until one stuck (several terms and seconds per rolling-restart step in RELIABILITY.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_voters_hand_leadership_over_in_one_election_while_validates_continue() {
    let cluster = TestCluster::start(5).await;
    let mut leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..8, 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (1..=5u64)
        .map(|id| {
            let (client, stop) = (cluster.client(id), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    // Errors are expected while leadership moves; only the load matters.
                    let _ = client.validate(&[(shard(id as u32), 1)]).await;
                }
            })
        })
        .collect();
    for _ in 0..3 {
        let target = cluster.other_than(leader);
        let before = cluster.status_of(leader).await.expect("leader status").term;
        let status = cluster
            .client(leader)
            .transfer_leader(target)
            .await
            .expect("the transfer completes");
        assert_eq!(status.leader, Some(target));
        let after = cluster.status_of(target).await.expect("target status").term;
        // One campaign; a second is tolerated for a follower whose timer fired on a busy
        // machine. A failed campaign costs at least two (it and the re-election after it).
        assert!(
            after - before <= 2,
            "moving leadership from {leader} to {target} took terms {before} to {after}"
        );
        leader = cluster.wait_for_leader().await;
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }
}

/// A stopping leader hands over to its best successor; if that one stalls, another
/// replica taking over ends the handover too, so the shutdown is not held up until the
/// handover's deadline and the cluster is not left leaderless meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_whose_successor_stalls_lets_another_take_over() {
    // A handover patient enough for a slow election on a busy machine: only another
    // replica taking over ends it before the stopped leader gives up.
    let mut cluster = TestCluster::start_with(5, &["--handoff-timeout-ms", "25000"]).await;
    let leader = cluster.wait_for_leader().await;
    // With every follower holding the whole log, the best successor is the highest id.
    let stalled = *cluster.others_than(leader).iter().max().unwrap();
    cluster.wait_matched_by_followers(leader).await;
    cluster.freeze(stalled, true);
    cluster.stop(leader);
    cluster.freeze(stalled, false);
    let log = cluster.log_of(leader);
    let handed = log
        .lines()
        .find(|l| l.contains("leadership handed over"))
        .unwrap_or_else(|| panic!("no handover in the stopped leader's log:\n{log}"));
    assert!(handed.contains(&format!("asked={stalled}")), "{handed}");
    assert!(
        !handed.contains(&format!("leader={stalled}"))
            && !handed.contains(&format!("leader={leader}")),
        "another replica took over: {handed}"
    );
    let next = cluster.wait_for_leader().await;
    assert_ne!(next, leader);
}

/// A stopping leader hands over to a voter that accepts connections, passing over its
/// best successor when that one is gone (killed); and a leader left with no voter to
/// connect to (the whole cluster stopping together) exits at once. Neither waits out its
/// handover budget, an hour here, for a replica that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_skips_successors_that_are_gone() {
    let mut cluster = TestCluster::start_with(3, &["--handoff-timeout-ms", "3600000"]).await;
    let leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..2, 1).await;
    // With both followers holding the whole log, the best successor is the higher id.
    let gone = *cluster.others_than(leader).iter().max().unwrap();
    let heir = *cluster.others_than(leader).iter().min().unwrap();
    cluster.wait_matched_by_followers(leader).await;
    cluster.kill(gone);

    cluster.stop(leader);
    let log = cluster.log_of(leader);
    assert!(
        log.contains(&format!("handing leadership over to={heir}"))
            && !log.contains(&format!("handing leadership over to={gone}")),
        "{log}"
    );
    assert!(log.contains("leadership handed over"), "{log}");
    assert_eq!(cluster.wait_for_leader().await, heir);

    // The heir leads with both other voters gone: nobody to hand over to.
    cluster.stop(heir);
    let log = cluster.log_of(heir);
    assert!(
        log.contains("no other voter can be reached to take over")
            && log.contains(&format!("replica {gone} not reachable"))
            && log.contains(&format!("replica {leader} not reachable")),
        "{log}"
    );
    assert!(!log.contains("handing leadership over"), "{log}");
}

/// `n` replicas with a patient handover (an hour), some writes that every follower holds,
/// the leader, and the followers by id (of equal logs, a step-down prefers the highest).
async fn patient_cluster(n: u64) -> (TestCluster, u64, Vec<u64>) {
    let cluster = TestCluster::start_with(n, &["--handoff-timeout-ms", "3600000"]).await;
    let leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..2, 1).await;
    let mut others = cluster.others_than(leader);
    others.sort_unstable();
    cluster.wait_matched_by_followers(leader).await;
    (cluster, leader, others)
}

/// Three replicas as [`patient_cluster`]: the leader, then the follower a step-down picks
/// second, then its heir.
async fn three_with_an_heir() -> (TestCluster, u64, u64, u64) {
    let (cluster, leader, others) = patient_cluster(3).await;
    (cluster, leader, others[0], others[1])
}

/// Sends the leader SIGTERM and kills `heir` once the leader has chosen it. Frozen until
/// then, the heir still accepts connections (its kernel does), so it is chosen, but it
/// cannot win an election.
async fn kill_the_chosen_heir(cluster: &mut TestCluster, leader: u64, heir: u64) {
    cluster.freeze(heir, true);
    cluster.terminate(leader);
    cluster
        .wait_for_log(leader, &format!("handing leadership over to={heir}"), 1)
        .await;
    cluster.kill(heir);
}

/// Asserts that the stopped `leader` found `heir` gone, handed leadership to `second`
/// instead, and that `second` now leads.
async fn handed_over_past(cluster: &TestCluster, leader: u64, heir: u64, second: u64) {
    let log = cluster.log_of(leader);
    assert!(
        log.contains("successor not reachable; asking another voter")
            && log.contains(&format!("unreachable={heir} to={second}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("asked={heir} leader={second}")),
        "{log}"
    );
    assert_eq!(cluster.wait_for_leader().await, second);
}

/// A stopping leader whose chosen successor dies while the leader waits for it to catch
/// up (so no campaign request is ever sent to find that out) notices, and hands over to
/// the next voter instead of waiting out its handover budget, an hour here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_replaces_a_successor_that_dies_while_catching_up() {
    let (mut cluster, leader, second, heir) = three_with_an_heir().await;

    // One write always outstanding; once both followers are frozen it stays appended on
    // the leader and acknowledged by neither, so neither holds the whole log. The second
    // is frozen first: a write committed between the two freezes is the heir's, which
    // keeps it the best successor (of equal logs, the higher id).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (cluster.client(leader), stop.clone());
        tokio::spawn(async move {
            let mut i = 100;
            while !stop.load(Ordering::SeqCst) {
                let _ = client.attach_hook(shard(i), Some(NodeId(1)), None).await;
                i += 1;
            }
        })
    };
    cluster.freeze(second, true);
    cluster.freeze(heir, true);
    wait_for(
        "a write appended that no follower holds",
        DEADLINE,
        || async {
            let status = cluster.status_of(leader).await?;
            let last = status.last_log_index?;
            status
                .members
                .iter()
                .filter(|m| m.id != leader)
                .all(|m| m.matched_index.unwrap_or(0) < last)
                .then_some(())
        },
    )
    .await;

    cluster.terminate(leader);
    cluster
        .wait_for_log(leader, &format!("handing leadership over to={heir}"), 1)
        .await;
    cluster.kill(heir);
    cluster.freeze(second, false);
    cluster.stop(leader);
    stop.store(true, Ordering::SeqCst);
    handed_over_past(&cluster, leader, heir, second).await;
    writer.abort();
}

/// A stopping leader whose chosen successor already holds the whole log, but dies before
/// it answers the request to campaign, learns it from that request (the connection is
/// refused) and hands over to the next voter instead of asking the dead one again until
/// its handover budget, an hour here, runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_replaces_a_successor_that_dies_when_asked_to_campaign() {
    let (mut cluster, leader, second, heir) = three_with_an_heir().await;
    kill_the_chosen_heir(&mut cluster, leader, heir).await;
    cluster.stop(leader);
    handed_over_past(&cluster, leader, heir, second).await;
}

/// With five voters the stopping leader sends nothing while it hands over (the other
/// followers must stop hearing from it before they vote). When its successor dies and the
/// only voter left to take over lags behind, that one must still catch up on the
/// leader's replication alone, with no heartbeat to carry it, and then win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_leader_hands_over_to_a_replacement_that_must_catch_up_first() {
    let (mut cluster, leader, others) = patient_cluster(5).await;
    // Of equal logs the higher id is the better heir: `heir` first, then `gone`, then the
    // two that are frozen below and fall behind, `lagging` before `last`.
    let (last, lagging, gone, heir) = (others[0], others[1], others[2], others[3]);

    cluster.freeze(last, true);
    cluster.freeze(lagging, true);
    // Committed by the leader, `heir` and `gone`: the frozen two miss them.
    attach_range(&cluster.client(leader), 2..6, 1).await;
    cluster.wait_matched_by(leader, &[heir, gone]).await;
    cluster.kill(gone);
    kill_the_chosen_heir(&mut cluster, leader, heir).await;
    cluster
        .wait_for_log(leader, &format!("unreachable={heir} to={lagging}"), 1)
        .await;
    // Heartbeats are off by now; the leader's log must reach `lagging` regardless.
    cluster.freeze(lagging, false);
    cluster.freeze(last, false);
    cluster.stop(leader);
    let log = cluster.log_of(leader);
    assert!(log.contains("leadership handed over"), "{log}");
    // The two that remain are no quorum of five: a third comes back to check the data.
    cluster.restart(gone).await;
    let next = cluster.wait_for_leader().await;
    assert!([lagging, last].contains(&next), "{next} leads");
    // Nothing acknowledged was lost on the way. The leader may not have heard from the
    // restarted replica yet, and answers 503 until a quorum has: retried as clients do.
    for i in 0..6 {
        let found = retried(|| {
            let client = cluster.client(next);
            async move { client.inspect(shard(i)).await }
        })
        .await
        .expect("inspect");
        assert_eq!(found, Some((1, NodeId(1))), "shard {i}");
    }
}

/// Removing the leader hands leadership over first; a voter that would be the best heir
/// but no longer answers is passed over, so the removal does not wait out the transfer's
/// deadline on a dead replica and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_over_to_a_voter_that_answers() {
    let mut cluster = TestCluster::start(5).await;
    let leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..2, 1).await;
    cluster.wait_matched_by_followers(leader).await;
    // Every follower holds the whole log, so the best heir is the highest id.
    let mut others = cluster.others_than(leader);
    others.sort_unstable();
    let gone = others.pop().unwrap();
    let heir = others.pop().unwrap();
    cluster.kill(gone);

    let status = cluster
        .client(leader)
        .remove_member(leader, false)
        .await
        .expect("the leader is removed");
    assert_eq!(status.leader, Some(heir), "{status:?}");
    assert!(!status.members.iter().any(|m| m.id == leader), "{status:?}");
    let log = cluster.log_of(leader);
    assert!(
        log.contains(&format!("handing leadership over to={heir}"))
            && !log.contains(&format!("handing leadership over to={gone}")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_traffic_fails_no_request() {
    let mut cluster = TestCluster::start(3).await;
    let urls = Arc::new(Mutex::new(
        (1..=3).map(|id| cluster.url(id)).collect::<Vec<_>>(),
    ));
    let traffic = Traffic::start(urls, 4);
    traffic.progress(10).await;
    for id in [1, 2, 3] {
        cluster.stop(id);
        traffic.progress(5).await;
        cluster.restart(id).await;
        crate::support::wait_ready(&cluster.client(id)).await;
    }
    traffic.progress(10).await;
    traffic.finish().await;
}

/// Asks `via` to remove `id`, which must be refused (409) saying `why`.
async fn removal_refused(cluster: &TestCluster, via: u64, id: u64, why: &str) {
    let refused = cluster
        .client(via)
        .remove_member(id, false)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(refused.to_string().contains(why), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_would_stop_the_cluster_is_refused() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = cluster.others_than(leader);
    cluster.kill(followers[0]);
    removal_refused(&cluster, leader, followers[1], "quorum").await;
    // Removing the leader is refused the same way, before it hands leadership over.
    removal_refused(&cluster, leader, leader, "quorum").await;
    assert!(!cluster
        .log_of(leader)
        .contains("handing leadership over to="));
    let missing = cluster
        .client(leader)
        .remove_member(42, false)
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");
    // Re-sent by a replica whose first forward got no answer, the same removal is done:
    // that first attempt may be what removed the replica.
    let resent = reqwest::Client::new()
        .delete(format!("{}/v1/cluster/members/42", cluster.url(leader)))
        .header(pageserver_controller::api::routing::RESENT_HEADER, "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), 200);
    // Removing the dead one is fine: the two that answer are a quorum of two.
    cluster
        .client(leader)
        .remove_member(followers[0], false)
        .await
        .unwrap();
    let mut voters = vec![leader, followers[1]];
    voters.sort_unstable();
    cluster.wait_for_voters(&voters).await;
}

/// With four voters, two of them down, removing one of the two: the two left that answer
/// are a quorum of the three that would remain, but the change is committed by a quorum
/// of the four first, which is not there. Refused, rather than left half done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_the_current_voters_cannot_commit_is_refused() {
    let mut cluster = TestCluster::start(4).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = cluster.others_than(leader);
    cluster.kill(followers[0]);
    cluster.kill(followers[1]);
    removal_refused(
        &cluster,
        leader,
        followers[1],
        "short of the 3 that must commit",
    )
    .await;
    let status = cluster.status_of(leader).await.unwrap();
    assert!(!status.joint, "{status:?}");
    assert_eq!(
        status.members.iter().filter(|m| m.role == "voter").count(),
        4
    );
}

/// A member added at a URL where another replica answers (a typo naming an existing
/// member) never catches up as far as the leader can tell, so it is never promoted: a
/// voter that cannot vote would cost the cluster its tolerance of one failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_where_another_replica_answers_is_not_promoted() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    // Through the operator's command, with a short catch-up wait.
    let (leader_url, wrong_url) = (cluster.url(leader), cluster.url(follower));
    let (ok, output) = tokio::task::spawn_blocking(move || {
        run_binary(&[
            "cluster",
            "add",
            "--url",
            &leader_url,
            "--id",
            "4",
            "--member-url",
            &wrong_url,
            "--catch-up-timeout-s",
            "3",
        ])
    })
    .await
    .unwrap();
    assert!(!ok, "a member that never catches up was promoted: {output}");
    assert!(output.contains("did not catch up"), "{output}");
    let cluster_status = cluster.status_of(leader).await.unwrap();
    let role = cluster_status
        .members
        .iter()
        .find(|m| m.id == 4)
        .map(|m| m.role.as_str());
    assert_eq!(role, Some("learner"), "{cluster_status:?}");
}

/// A replica that joined with `--join` and restarts while still a learner (its catch-up
/// cut short by a crash or a rollout) asks again to be promoted: it asked only on its
/// first start before, and stayed a learner for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_replica_restarted_as_a_learner_asks_again_to_be_a_voter() {
    let mut cluster = TestCluster::start(3).await;
    let joined_through = cluster.wait_for_leader().await;
    cluster.join(4, joined_through).await;
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
    // Leave it a learner, as a join cut short would.
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    client.remove_member(4, false).await.unwrap();
    cluster.wait_for_voters(&[1, 2, 3]).await;
    client
        .add_member(4, &cluster.url(4), true, None)
        .await
        .unwrap();
    let view = &cluster;
    wait_for(
        "replica 4 to hold the membership that makes it a learner",
        DEADLINE,
        || async move {
            let status = view.status_of(4).await?;
            let me = status.members.iter().find(|m| m.id == 4)?;
            (me.role == "learner" && status.removed.is_none()).then_some(())
        },
    )
    .await;
    // Restarted with the same flags (`--join` naming the replica it joined through,
    // which is down now), it asks again, through the other voters its log names.
    cluster.kill(4);
    cluster.kill(joined_through);
    cluster.restart(4).await;
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
    assert!(
        cluster
            .log_of(4)
            .contains("restarted as a learner before being promoted"),
        "{}",
        cluster.log_of(4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_as_a_learner_replicates_and_does_not_vote() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    cluster.join(4, leader).await;
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
    let leader = cluster.wait_for_leader().await;
    cluster
        .client(leader)
        .remove_member(4, false)
        .await
        .unwrap();
    cluster.wait_for_voters(&[1, 2, 3]).await;

    // Replica 4 still runs; the operator adds it back with ?learner=true.
    let client = cluster.client(leader);
    let status = client
        .add_member(4, &cluster.url(4), true, None)
        .await
        .unwrap();
    assert_eq!(
        role_of(&status, 4).as_deref(),
        Some("learner"),
        "{status:?}"
    );
    // It replicates: a write through the leader reaches its state.
    let generation = client
        .attach_hook(shard(9), Some(NodeId(1)), None)
        .await
        .unwrap();
    let learner = cluster.client(4);
    wait_shard_applied(&learner, 9, generation).await;
    // And it never becomes a voter by itself.
    assert_still_a_learner(&cluster, leader, 4).await;
}

/// The role (`voter` or `learner`) of member `id` in `status`.
fn role_of(status: &pageserver_controller::api::types::ClusterStatus, id: u64) -> Option<String> {
    status
        .members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.role.clone())
}

/// The leader lists replica `id` as a learner, with no membership change under way.
async fn assert_still_a_learner(cluster: &TestCluster, leader: u64, id: u64) {
    let status = cluster.status_of(leader).await.unwrap();
    assert_eq!(
        role_of(&status, id).as_deref(),
        Some("learner"),
        "{status:?}"
    );
    assert!(!status.joint, "{status:?}");
}

/// Waits until `client`'s replica has applied `generation` of shard `n`.
async fn wait_shard_applied(client: &Client, n: u32, generation: Option<u32>) {
    wait_for("the replica to apply the attach", DEADLINE, || async {
        let inspected = client.inspect(shard(n)).await.ok()??;
        (Some(inspected.0) == generation).then_some(())
    })
    .await;
}

/// `serve --join URL --learner`: the replica asks to be added as a learner, catches up,
/// and stays a learner, also after a restart (which, without `--learner`, asks to be
/// promoted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_as_a_learner_joins_as_one_and_stays_one() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    cluster.launch_joining_with(4, cluster.url(leader), &["--learner"]);
    cluster.wait_answering(4).await;
    let generation = cluster
        .client(leader)
        .attach_hook(shard(9), Some(NodeId(1)), None)
        .await
        .unwrap();
    let learner = cluster.client(4);
    wait_shard_applied(&learner, 9, generation).await;
    // Once it stops asking (it would only stop as a voter without `--learner`).
    wait_for("replica 4 to be added", DEADLINE, || async {
        let log = cluster.log_of(4);
        (log.contains("added to the cluster") || log.contains("is a member of the cluster"))
            .then_some(())
    })
    .await;
    for restart in [false, true] {
        if restart {
            cluster.stop(4);
            cluster.restart(4).await;
            // Caught up again through the leader's entries, after the restart.
            let generation = cluster
                .client(leader)
                .attach_hook(shard(9), Some(NodeId(2)), None)
                .await
                .unwrap();
            wait_shard_applied(&learner, 9, generation).await;
        }
        assert_still_a_learner(&cluster, leader, 4).await;
    }
    assert!(
        !cluster
            .log_of(4)
            .contains("restarted as a learner before being promoted"),
        "{}",
        cluster.log_of(4)
    );

    // `--learner` on a voter's data dir changes nothing and says so: demoting a voter is
    // a membership change (remove, then add as a learner), not a flag.
    let voter = cluster.other_than(leader);
    cluster.stop(voter);
    cluster.add_args(voter, &["--learner"]);
    cluster.launch_joining_through(voter, cluster.url(leader));
    cluster.wait_answering(voter).await;
    cluster
        .wait_for_log(voter, "--learner is ignored: this replica is a voter", 1)
        .await;
    // A write through it, and it holds the leader's log up to that write: any change of
    // membership it had asked for at its start would be in that log by now.
    let via_voter = cluster.client(voter);
    retried(|| via_voter.attach_hook(shard(7), Some(NodeId(1)), None))
        .await
        .expect("an attach through the restarted voter");
    let leader = cluster.wait_for_leader().await;
    cluster.wait_matched_by(leader, &[voter]).await;
    let status = cluster.status_of(leader).await.unwrap();
    assert_eq!(
        role_of(&status, voter).as_deref(),
        Some("voter"),
        "{status:?}"
    );
}

/// openraft drives the second step of a voter change (joint to final) from the caller's
/// request. A forced removal that waits out its deadline with the new configuration's
/// quorum missing gives up after the first: the leader finishes it by itself once the
/// quorum is back, rather than staying joint (where every write needs both quorums).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_caller_gave_up_is_finished_by_the_leader() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = cluster.others_than(leader);
    let (down, removed) = (followers[0], followers[1]);
    cluster.kill(down);
    let gave_up = cluster
        .client(leader)
        .with_timeout(Duration::from_secs(60))
        .remove_member(removed, true)
        .await
        .unwrap_err();
    assert!(
        gave_up.status() == Some(503) && gave_up.to_string().contains("may still complete"),
        "{gave_up}"
    );
    let status = cluster.status_of(leader).await.unwrap();
    assert!(status.joint, "{status:?}");
    cluster.restart(down).await;
    let mut voters = vec![leader, down];
    voters.sort_unstable();
    cluster.wait_for_voters(&voters).await;
    // Logged once the change returns, a moment after the members see it.
    cluster
        .wait_for_log(leader, "finished a membership change left half done", 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_removal_goes_through_and_completes_once_the_quorum_is_back() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = cluster.others_than(leader);
    let (down, removed) = (followers[0], followers[1]);
    cluster.kill(down);
    // The operator insists (say the replica's machine is being retired) and brings the
    // stopped one back: the change, refused without force, commits once the new
    // configuration has a quorum again.
    let client = cluster.client(leader).with_timeout(Duration::from_secs(60));
    let forced = tokio::spawn(async move { client.remove_member(removed, true).await });
    let view = &cluster;
    wait_for("the forced change to begin", DEADLINE, || async move {
        view.status_of(leader).await.filter(|s| s.joint).map(|_| ())
    })
    .await;
    cluster.restart(down).await;
    match forced.await.unwrap() {
        Ok(status) => assert!(!status
            .members
            .iter()
            .any(|m| m.id == removed && m.role == "voter")),
        // Committed later than the change's own deadline: it said it may still complete.
        Err(e) => assert!(
            e.status() == Some(503) && e.to_string().contains("may still complete"),
            "{e}"
        ),
    }
    let mut voters = vec![leader, down];
    voters.sort_unstable();
    cluster.wait_for_voters(&voters).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_removed_while_down_stops_campaigning_and_can_be_added_back() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let removed = cluster.other_than(leader);
    cluster.kill(removed);
    let members = cluster.running();
    cluster
        .client(leader)
        .remove_member(removed, false)
        .await
        .unwrap();
    cluster.wait_for_voters(&members).await;

    // Started again on its data dir, its own log still lists it as a voter: it campaigns
    // once, and the members' answers tell it that it was removed.
    cluster.restart(removed).await;
    let view = &cluster;
    let report = wait_for(
        "the removed replica to learn from its peers that it was removed",
        DEADLINE,
        || async move { view.status_of(removed).await?.removed },
    )
    .await;
    assert!(members.contains(&report.reported_by), "{report:?}");

    // From then on it calls no elections: its term stays put over many election timeouts
    // (250..400 ms; before this was fixed it climbed by one every timeout or so). Nobody
    // else moves it: no member sends anything to a replica outside its membership.
    let term = cluster.status_of(removed).await.unwrap().term;
    let watch_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < watch_until {
        let status = cluster.status_of(removed).await.unwrap();
        assert_eq!(status.term, term, "the removed replica campaigned again");
        assert!(status.removed.is_some(), "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It says so to probes and callers at once, instead of waiting for a leader.
    let client = cluster.client(removed);
    let not_ready = client.ready().await.unwrap_err();
    assert_eq!(not_ready.status(), Some(503), "{not_ready}");
    assert!(not_ready.to_string().contains("was removed"), "{not_ready}");
    let refused = client
        .attach_hook(shard(1), Some(NodeId(1)), None)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert!(refused.to_string().contains("was removed"), "{refused}");
    let metrics = cluster
        .http()
        .get(format!("{}/metrics", cluster.url(removed)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("\npsc_removed 1\n"), "{metrics}");

    // An operator adds it back as it is: the leader replicates the newer membership to
    // it, it campaigns again when it must, and serves.
    cluster
        .client(leader)
        .add_member(removed, &cluster.url(removed), false, None)
        .await
        .unwrap();
    cluster.wait_for_voters(&[1, 2, 3]).await;
    let view = &cluster;
    wait_for(
        "the re-added replica to consider itself a member again",
        DEADLINE,
        || async move {
            let status = view.status_of(removed).await?;
            status.removed.is_none().then_some(())
        },
    )
    .await;
    cluster.wait_caught_up(removed).await;
    wait_ready(&cluster.client(removed)).await;
    let generation = cluster
        .client(removed)
        .attach_hook(shard(1), Some(NodeId(1)), None)
        .await
        .unwrap();
    assert_eq!(generation, Some(1));
}

/// A leadership transfer whose caller goes away half-way (an interrupted CLI, a client's
/// timeout, a follower that stopped forwarding) must not leave the leader half-way too:
/// refusing reads and writes as "handing over" while its heartbeats keep every other
/// replica from taking over, which would stop the cluster until someone restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_abandoned_by_its_caller_leaves_the_cluster_writable() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..1, 1).await;

    // The target is frozen, so the handover waits on it; the caller gives up first.
    let target = cluster.other_than(leader);
    cluster.freeze(target, true);
    let impatient = cluster
        .client(leader)
        .with_timeout(Duration::from_millis(500));
    let abandoned = impatient.transfer_leader(target).await;
    cluster.freeze(target, false);
    assert!(abandoned.is_err(), "{abandoned:?}");

    // Whoever leads now takes writes; and so does the first leader once it leads again
    // (handed back explicitly, in case the frozen target took over when it woke).
    let mut generation = 1;
    for lead in [None, Some(leader)] {
        if let Some(id) = lead {
            let status = retried(|| {
                let client = cluster.client(cluster.other_than(id));
                async move { client.transfer_leader(id).await }
            })
            .await
            .expect("leadership handed back");
            assert_eq!(status.leader, Some(id));
        }
        let via = lead.unwrap_or(leader);
        let got = retried(|| {
            let client = cluster.client(via);
            async move { client.attach_hook(shard(0), Some(NodeId(1)), None).await }
        })
        .await
        .unwrap_or_else(|e| panic!("an attach through {via} after the abandoned transfer: {e}"));
        assert!(got > Some(generation), "{got:?} after {generation}");
        generation = got.expect("a generation");
    }
}

/// Handovers take turns: a step-down asked while a transfer runs waits for it and then
/// reports where leadership went, rather than starting a second handover beside the
/// first (two campaigns at once, and whichever finished first ending the other's pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_down_during_a_transfer_waits_for_it_and_reports_where_leadership_went() {
    let cluster = TestCluster::start(5).await;
    attach_range(&cluster.client(cluster.wait_for_leader().await), 0..2, 1).await;
    let handovers_begun = |id: u64| {
        cluster
            .log_of(id)
            .matches("handing leadership over")
            .count()
    };
    // With five voters a transfer keeps quiet for a lease (0.4 s) before its target
    // campaigns: the step-down comes in that window. Should a busy machine let the transfer
    // finish first, the step-down has nothing to wait for; try again from the new leader.
    let (leader, target, answer) =
        wait_for("a step-down that overlaps a transfer", DEADLINE, || {
            let cluster = &cluster;
            async move {
                let leader = cluster.wait_for_leader().await;
                // The step-down on its own would pick the highest id (every follower holds
                // the whole log); the transfer goes to the lowest.
                let target = *cluster.others_than(leader).iter().min().unwrap();
                let begun = handovers_begun(leader);
                let transfer = tokio::spawn({
                    let client = cluster.client(leader);
                    async move { client.transfer_leader(target).await }
                });
                wait_for("the transfer to begin", DEADLINE, || async {
                    (handovers_begun(leader) > begun).then_some(())
                })
                .await;
                let answer = cluster
                    .client(leader)
                    .step_down()
                    .await
                    .expect("a step-down answer");
                let moved = transfer.await.unwrap().expect("the transfer completes");
                assert_eq!(moved.leader, Some(target), "{moved:?}");
                if answer.was_leader {
                    assert_eq!(
                        handovers_begun(leader),
                        begun + 1,
                        "the step-down began a handover of its own beside the transfer:\n{}",
                        cluster.log_of(leader)
                    );
                }
                answer.was_leader.then_some((leader, target, answer))
            }
        })
        .await;
    assert_eq!(
        answer,
        StepDownResponse {
            replica_id: leader,
            was_leader: true,
            leader: Some(target),
        },
        "the step-down waited for the transfer to {target} and did not start its own"
    );
    let log = cluster.log_of(leader);
    let ended = log.matches("leadership handed over").count()
        + log.matches("leadership transfer did not complete").count();
    assert_eq!(
        handovers_begun(leader),
        ended,
        "replica {leader} began a handover that never ended:\n{log}"
    );
    assert_eq!(cluster.wait_for_leader().await, target);
}

/// A handover waits for the one under way only as long as its own budget allows: a
/// step-down (its budget is `--handoff-timeout-ms`, 1 s here) asked behind a transfer
/// whose target is frozen (the transfer holds its turn for its 5 s) is answered 503 with
/// the reason, begins no handover of its own, and leaves the cluster writable once the
/// transfer has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_down_behind_a_stalled_transfer_gets_a_503_and_changes_nothing() {
    let cluster = TestCluster::start_with(3, &["--handoff-timeout-ms", "1000"]).await;
    let leader = cluster.wait_for_leader().await;
    attach_range(&cluster.client(leader), 0..2, 1).await;
    let handovers_begun = |id: u64| {
        cluster
            .log_of(id)
            .matches("handing leadership over")
            .count()
    };
    let frozen = *cluster.others_than(leader).iter().min().unwrap();
    let begun = handovers_begun(leader);
    cluster.freeze(frozen, true);
    let transfer = tokio::spawn({
        let client = cluster.client(leader);
        async move { client.transfer_leader(frozen).await }
    });
    wait_for("the transfer to begin", DEADLINE, || async {
        (handovers_begun(leader) > begun).then_some(())
    })
    .await;
    let refused = cluster
        .client(leader)
        .step_down()
        .await
        .expect_err("the step-down cannot take its turn within 1 s");
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("another leadership handover did not finish within 1s"),
        "{refused}"
    );
    assert_eq!(
        handovers_begun(leader),
        begun + 1,
        "the step-down began a handover beside the transfer:\n{}",
        cluster.log_of(leader)
    );
    cluster.freeze(frozen, false);
    // Either outcome: the target may have woken in time to take over.
    let _ = transfer.await.unwrap();
    let leader = cluster.wait_for_leader().await;
    cluster
        .client(cluster.other_than(leader))
        .attach_hook(shard(0), Some(NodeId(2)), None)
        .await
        .expect("the cluster is writable after the stalled transfer");
    let target = cluster.other_than(leader);
    let moved = cluster
        .client(leader)
        .transfer_leader(target)
        .await
        .unwrap();
    assert_eq!(
        moved.leader,
        Some(target),
        "the turn was given back: {moved:?}"
    );
}

/// A replica asked to join a cluster it cannot reach keeps trying for minutes (the
/// cluster may be starting too). SIGTERM (a pod deleted meanwhile) ends it at once and
/// cleanly, and it leaves no data dir behind: started again, it would join afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waiting_for_the_cluster_it_joins_stops_on_sigterm() {
    let mut cluster = TestCluster::start(1).await;
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    cluster.launch_joining(2, nowhere);
    cluster
        .wait_for_log(2, "waiting for the cluster to join", 1)
        .await;
    // Fails after DEADLINE if the replica only notices when its patience (minutes) ends.
    cluster.stop(2);
    let data_dir = &cluster.replicas[&2].data_dir;
    assert!(
        !data_dir.exists() || std::fs::read_dir(data_dir).unwrap().next().is_none(),
        "{} was set up",
        data_dir.display()
    );
}

/// A replica of the initial cluster that answers for another cluster (started with
/// another `--initial-cluster`, as a mistaken manifest would) keeps the others from
/// initializing: the two that agree would otherwise form a cluster of their own beside
/// it. Fixed, it forms the cluster with them. (Only a peer that answers can be seen to
/// differ: here the odd one starts first. Pods of a StatefulSet see every peer before
/// any bootstraps.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_initializes_beside_a_listed_peer_of_another_cluster() {
    let mut cluster = TestCluster::unstarted(3, &[]);
    // The same three and a fourth: another cluster id, and no quorum of its own.
    let another = format!(
        "1={},2={},3={},4=http://127.0.0.1:{}",
        cluster.url(1),
        cluster.url(2),
        cluster.url(3),
        free_port()
    );
    cluster.replicas.get_mut(&3).unwrap().initial_cluster = Some(another);
    cluster.launch(3);
    cluster.wait_answering(3).await;
    for id in 1..=2 {
        cluster.launch(id);
    }
    for id in 1..=2 {
        cluster
            .wait_for_log(id, "listed peers belong to another cluster", 1)
            .await;
        let status = cluster.status_of(id).await.expect("answers");
        assert_eq!(
            (status.leader, status.last_log_index),
            (None, None),
            "replica {id} initialized beside a peer of another cluster: {status:?}"
        );
    }
    cluster.kill(3);
    cluster.wipe(3);
    cluster.replicas.get_mut(&3).unwrap().initial_cluster = None;
    cluster.launch(3);
    cluster.wait_for_leader().await;
    cluster.wait_for_voters(&[1, 2, 3]).await;
}

/// A StatefulSet created with one initial member and scaled to three: the initial pod
/// loses its volume. Nothing in its initial cluster answers (it is the whole of it), but
/// the pods after it run the cluster: it rejoins them rather than bootstrap a second
/// cluster of one under the same id, which would hand out generations again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_initial_pod_rejoins_the_cluster_it_grew_into_after_losing_its_volume() {
    let (mut cluster, before) = grown_from_one_pod().await;
    cluster.kill(1);
    cluster.wipe(1);
    cluster.launch(1);
    rejoined_once(&mut cluster, before).await;
}

/// As above, but the later pods are down too when the initial pod comes back on its
/// empty volume (a node restarted them all): finding nothing running at first, it keeps
/// asking for a while before it bootstraps, and joins them when they answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_initial_pod_waits_for_later_pods_that_restart_with_it() {
    let (mut cluster, before) = grown_from_one_pod().await;
    for id in 1..=3 {
        cluster.kill(id);
    }
    cluster.wipe(1);
    cluster.launch(1);
    cluster
        .wait_for_log(1, "no running cluster found: bootstrapping unless", 1)
        .await;
    cluster.launch(2);
    cluster.launch(3);
    rejoined_once(&mut cluster, before).await;
}

/// A StatefulSet created with one initial pod and scaled to three, and the generation an
/// attach through pod 1 got.
async fn grown_from_one_pod() -> (TestCluster, Option<u32>) {
    let mut cluster = TestCluster::pods(3, &[], None, None).with_initial_pods(1);
    cluster.launch(1);
    cluster.wait_for_leader().await;
    cluster.launch(2);
    cluster.launch(3);
    cluster.wait_for_voters(&[1, 2, 3]).await;
    let before = retried(|| {
        let client = cluster.client(1);
        async move { client.attach_hook(shard(0), Some(NodeId(1)), None).await }
    })
    .await
    .expect("an attach before the volume is lost");
    (cluster, before)
}

/// Pod 1, on an empty volume, left the cluster and joined it again; an attach through it
/// gives a later generation than `before`, and its log holds one bootstrap only (its
/// first life's).
async fn rejoined_once(cluster: &mut TestCluster, before: Option<u32>) {
    cluster
        .wait_for_log(1, "removed from the running cluster: joining it again", 1)
        .await;
    cluster.wait_for_voters(&[1, 2, 3]).await;
    cluster.wait_caught_up(1).await;
    let after = retried(|| {
        let client = cluster.client(1);
        async move { client.attach_hook(shard(0), Some(NodeId(1)), None).await }
    })
    .await
    .expect("an attach after it rejoined");
    assert!(after > before, "generation {after:?} after {before:?}");
    let bootstraps = cluster
        .log_of(1)
        .matches("bootstrapping a new cluster once each has seen this one")
        .count();
    assert_eq!(bootstraps, 1);
}

/// A pod that joins keeps its port answering `/status` from its waiting room until the
/// replica binds it, however long joining takes (here: the cluster has no quorum). A
/// port that went dead meanwhile would fail the liveness probe of a StatefulSet and
/// restart the pod in the middle of joining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_joining_a_cluster_without_a_quorum_keeps_answering_its_probes() {
    let mut cluster = TestCluster::pods(4, &[], None, None).with_initial_pods(3);
    for id in 1..=3 {
        cluster.launch(id);
    }
    cluster.wait_for_voters(&[1, 2, 3]).await;
    // Every pod out of its waiting room: the leader lists the initial members as voters
    // as soon as two of them have formed the cluster, while the third may still linger
    // there (up to a minute) for the two to see it, and would linger on, waiting for a
    // running cluster, once they are killed.
    for id in 1..=3 {
        cluster.wait_caught_up(id).await;
    }
    cluster.kill(2);
    cluster.kill(3);
    cluster.launch(4);
    cluster
        .wait_for_log(4, "empty data dir: joining the running cluster", 1)
        .await;
    let status = cluster.client(4);
    for _ in 0..20 {
        status
            .status()
            .await
            .expect("the joining pod stopped answering /status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.launch(2);
    cluster.launch(3);
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
}

/// A new replica started with an id the cluster already gives another replica (an
/// operator's typo) is refused: it never asks the cluster to remove the live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_joining_with_an_id_taken_at_another_url_is_refused() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let taken = cluster.other_than(leader);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let data = dir.path().join("d");
    let join = cluster.url(leader);
    let args = [
        "serve",
        "--id",
        &taken.to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--join",
        &join,
        "--data-dir",
        data.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let (ok, output) = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_binary(&args)
        }),
    )
    .await
    .expect("serve exits")
    .unwrap();
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!("replica id {taken} is already a member"))
            && output.contains(&cluster.url(taken)),
        "{output}"
    );
    let status = cluster.status_of(leader).await.unwrap();
    let member = status.members.iter().find(|m| m.id == taken).unwrap();
    assert_eq!(member.url, cluster.url(taken), "{status:?}");
}
