//! Two replicas joining at once, as StatefulSet pods 3 and 4 do after `kubectl scale
//! --replicas 5` with `podManagementPolicy: Parallel` (found by the Docker deploy test,
//! where it struck about one run in three).
//!
//! The leader used to answer the second `POST /v1/cluster/members` with 409 "another
//! membership change is in progress" while it added the first, and `serve --join` took a
//! 4xx as a final refusal: the replica exited. A change in progress is transient, so it
//! is now a 503 that the joiner retries. The two joins race, so the old bug showed often
//! rather than always.

use std::process::{Child, Command, Stdio};

use pageserver_controller::domain::NodeId;

use crate::support::{free_port, shard, TestCluster, BIN};

/// Kills the joiners when the test ends.
struct Joiners(Vec<Child>);

impl Drop for Joiners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_joining_at_once_both_become_voters() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    // A log to catch up on, so that the first joiner is still being added when the
    // second asks.
    let client = cluster.client(leader);
    for round in 0..40u32 {
        let attaches = (0..50u32).map(|i| {
            let client = client.clone();
            async move {
                client
                    .attach_hook(shard(round * 50 + i), Some(NodeId(1)), None)
                    .await
            }
        });
        for result in futures::future::join_all(attaches).await {
            result.expect("an attach");
        }
    }
    let mut joiners = Joiners(Vec::new());
    for id in [4u64, 5] {
        let port = free_port();
        let log = std::fs::File::create(cluster.root().join(format!("joiner-{id}.log")))
            .expect("a log file");
        let child = Command::new(BIN)
            .args(["--log", "info,openraft=warn", "serve"])
            .args(["--id", &id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(cluster.root().join(format!("joiner-{id}")))
            .args(["--join", &cluster.url(1)])
            // The test cluster's election timings (see TestCluster): once voters, the
            // joiners must not campaign at a busy machine's first missed heartbeat.
            .args([
                "--election-timeout-min-ms",
                "700",
                "--election-timeout-max-ms",
                "1000",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning a joiner");
        joiners.0.push(child);
    }
    cluster.wait_for_voters(&[1, 2, 3, 4, 5]).await;
    for child in &mut joiners.0 {
        assert!(
            child.try_wait().expect("polling a joiner").is_none(),
            "a joiner exited instead of joining"
        );
    }
}
