//! Restarts: from the log, from a snapshot, all at once; and data dirs that must not start.

use pageserver_controller::domain::NodeId;

use crate::support::{attach_range, retried, run_binary, shard, wait_for, TestCluster, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_catches_up_through_a_snapshot() {
    let mut cluster = TestCluster::start_with(
        3,
        &["--snapshot-every", "20", "--snapshot-keep-entries", "5"],
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    cluster.stop(follower);
    let client = cluster.client(leader);
    for i in 0..60 {
        client
            .attach_hook(shard(i % 15), Some(NodeId(u64::from(i % 4))), None)
            .await
            .unwrap();
    }
    // The leader purges behind its snapshot once its retries to the stopped follower
    // release the entries they were sending.
    let status = wait_for("the leader to purge its log", DEADLINE, || async {
        let status = cluster.status_of(leader).await?;
        (status.purged_index? > 5).then_some(status)
    })
    .await;
    cluster.restart(follower).await;
    cluster
        .wait_applied(follower, status.committed_index.unwrap())
        .await;
    let caught_up = cluster.status_of(follower).await.unwrap();
    assert!(
        caught_up.snapshot_index.is_some(),
        "the follower installed a snapshot: {caught_up:?}"
    );
    assert!(cluster.log_of(follower).contains("installed snapshot"));
    // And the metrics say so, with how long the install took.
    assert!(
        cluster
            .metric(follower, "psc_snapshot_installs_total")
            .await
            .is_some_and(|n| n >= 1.0),
        "no install counted"
    );
    assert!(
        cluster
            .metric(follower, "psc_snapshot_install_seconds")
            .await
            .is_some_and(|s| s > 0.0),
        "no install duration"
    );

    // The caught-up replica can carry the cluster: kill the old leader and read through it.
    let expected: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..15 {
            v.push(client.inspect(shard(i)).await.unwrap());
        }
        v
    };
    cluster.kill(leader);
    cluster.wait_for_leader().await;
    let via_follower = cluster.client(follower);
    for (i, expected) in expected.iter().enumerate() {
        assert_eq!(
            &retried(|| via_follower.inspect(shard(i as u32)))
                .await
                .unwrap(),
            expected
        );
    }
    crate::support::wait_ready(&via_follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_the_whole_cluster_keeps_all_state() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    attach_range(&client, 0..10, 1).await;
    client
        .attach_hook(shard(3), Some(NodeId(2)), None)
        .await
        .unwrap();
    client.attach_hook(shard(4), None, None).await.unwrap();
    let before = client.list_tenants(None, None).await.unwrap();
    for id in cluster.running() {
        cluster.stop(id);
    }
    for id in [3, 1, 2] {
        cluster.restart(id).await;
    }
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    assert_eq!(client.list_tenants(None, None).await.unwrap(), before);
    assert_eq!(
        client
            .attach_hook(shard(3), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(
        client
            .attach_hook(shard(4), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(2),
        "detach kept generation 1"
    );
}

/// A leader killed and started again before its followers elected another must not
/// answer a read from a state older than the last write it acknowledged. openraft 0.9
/// resumes such a replica as leader of its old term and takes the commit index it last
/// saved (written lazily, so lost with the process) as the point a read must reach: reads
/// waiting for a quorum when the first follower comes back would answer without the
/// writes acknowledged just before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_and_restarted_answers_reads_with_every_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    let mut acknowledged = None;
    for _ in 0..5 {
        acknowledged = client
            .attach_hook(shard(1), Some(NodeId(1)), None)
            .await
            .unwrap();
    }
    let acknowledged = acknowledged.expect("attached");
    let follower = cluster.other_than(leader);
    for id in cluster.others_than(leader) {
        cluster.kill(id);
    }
    cluster.kill(leader);
    cluster.restart(leader).await;

    // Readers that keep asking the old leader, so reads are waiting for a quorum when a
    // follower comes back.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let client = cluster.client(leader);
            tokio::spawn(async move {
                let end = std::time::Instant::now() + DEADLINE * 2;
                let mut answers = Vec::new();
                while answers.len() < 3 && std::time::Instant::now() < end {
                    match client.inspect(shard(1)).await {
                        Ok(answer) => answers.push(answer.map(|(generation, _)| generation)),
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                    }
                }
                answers
            })
        })
        .collect();
    cluster.restart(follower).await;
    for reader in readers {
        let answers = reader.await.unwrap();
        assert!(!answers.is_empty(), "no read answered after the restart");
        for answer in answers {
            assert_eq!(
                answer,
                Some(acknowledged),
                "a read through the restarted leader missed the acknowledged generation"
            );
        }
    }
}

fn serve_once(args: &[&str]) -> (bool, String) {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    run_binary(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_of_another_replica_or_damaged_ones_are_refused() {
    let mut cluster = TestCluster::start_with(3, &["--snapshot-every", "5"]).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    attach_range(&client, 0..12, 1).await;
    let victim = cluster.other_than(leader);
    cluster.wait_caught_up(victim).await;
    wait_for("the victim to take a snapshot", DEADLINE, || async {
        cluster.status_of(victim).await?.snapshot_index.map(|_| ())
    })
    .await;
    cluster.stop(victim);
    let dir = cluster.replicas[&victim].data_dir.clone();
    let dir = dir.to_str().unwrap();

    let other = if victim == 1 { 2 } else { 1 };
    let (ok, stderr) = serve_once(&[
        "--id",
        &other.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
    ]);
    assert!(
        !ok && stderr.contains(&format!("belongs to replica {victim}")),
        "{stderr}"
    );

    let (ok, stderr) = serve_once(&[
        "--id",
        &victim.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
        "--cluster-name",
        "elsewhere",
    ]);
    assert!(!ok && stderr.contains("belongs to cluster"), "{stderr}");

    let snapshot = std::path::Path::new(dir).join("snapshot/current.snap");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&snapshot, bytes).unwrap();
    let (ok, stderr) = serve_once(&[
        "--id",
        &victim.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
    ]);
    assert!(!ok && stderr.contains("checksum"), "{stderr}");

    let empty = cluster.root().join("empty");
    let (ok, stderr) = serve_once(&[
        "--id",
        "9",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        empty.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("--initial-cluster"), "{stderr}");
}
