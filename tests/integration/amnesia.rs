//! A replica that lost its disk must not vote as if it remembered (found while deploying;
//! fixed by deciding, before Raft starts, to leave and rejoin: see `src/bootstrap.rs`).
//! The same for a replica that had joined with `--join` (found by the chaos harness's
//! `disk-loss` fault after a `member-replace`: the leader answered the join "already a
//! member", the wiped replica voted again, and the leader's Raft core panicked on a
//! follower log that went backwards).
//!
//! `serve` with `--initial-cluster` and an empty data dir, while the cluster runs, used to
//! "wait to be replicated to" while running Raft as a voter with an empty log and no vote:
//! it granted its vote to any candidate. Here generation 1 is
//! acknowledged with replicas 1 and 3; replica 3 loses its disk and replica 1 dies; the
//! wiped replica 3 elects replica 2, which never had generation 1, and the acknowledged
//! generation is gone (the next attach hands out generation 1 a second time). A correct
//! cluster stays unavailable here: only replica 1 holds the acknowledged state.

use std::time::Duration;

use pageserver_controller::domain::NodeId;

use crate::support::{attach_range, retried, shard, wait_for, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_disk_cannot_elect_a_leader_without_acknowledged_writes() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    // Make 1 the leader and take 2 away, so that generation 1 lives on 1 and 3 only.
    if leader != 1 {
        cluster
            .client(leader)
            .transfer_leader(1)
            .await
            .expect("transfer to 1");
        wait_for("replica 1 to lead", Duration::from_secs(30), || async {
            (cluster.leader_now().await == Some(1)).then_some(())
        })
        .await;
    }
    cluster.stop(2);
    let generation = cluster
        .client(1)
        .attach_hook(shard(1), Some(NodeId(7)), None)
        .await
        .expect("acknowledged with replicas 1 and 3");
    assert_eq!(generation, Some(1));

    cluster.kill(3);
    cluster.wipe(3);
    cluster.kill(1);
    cluster.restart(2).await;
    // Replica 3 finds the cluster that still lists it: it asks to be removed before it
    // joins again, which cannot happen without a quorum, so it never starts Raft.
    cluster.launch(3);

    // Either the cluster stays unavailable (correct), or whatever leads must still know
    // generation 1.
    let elected = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(leader) = cluster.leader_now().await {
                if let Ok(found) = cluster.client(leader).inspect(shard(1)).await {
                    return (leader, found);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if let Ok((leader, found)) = elected {
        assert!(
            found.is_some_and(|(g, _)| g >= 1),
            "replica {leader} leads without the acknowledged generation 1 (it shows {found:?}): the \
             wiped replica 3 voted for it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_disk_leaves_and_rejoins_by_itself() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    attach_range(&client, 0..10, 1).await;
    let lost = cluster.other_than(leader);
    cluster.kill(lost);
    cluster.wipe(lost);
    // Same flags as before the disk was lost: the replica sorts itself out.
    cluster.restart(lost).await;
    let mut all = cluster.running();
    all.sort_unstable();
    cluster.wait_for_voters(&all).await;
    assert!(
        cluster
            .log_of(lost)
            .contains("Asking the cluster to remove it"),
        "{}",
        cluster.log_of(lost)
    );
    cluster.wait_caught_up(lost).await;
    cluster.kill(leader);
    cluster.wait_for_leader().await;
    let via_lost = cluster.client(lost);
    for i in 0..10 {
        assert_eq!(
            retried(|| via_lost.inspect(shard(i))).await.unwrap(),
            Some((1, NodeId(1)))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_replica_that_lost_its_disk_leaves_and_rejoins_by_itself() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    cluster.join(4, leader).await;
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
    cluster.attach_all(leader, 0..10, 1).await;
    cluster.wait_caught_up(4).await;
    cluster.kill(4);
    cluster.wipe(4);
    // Same flags as before: `--join` through the leader.
    cluster.restart(4).await;
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
    // Every replica's Raft is alive: writes commit, and the rejoined replica serves them.
    let leader = cluster.wait_for_leader().await;
    for i in 0..10 {
        assert_eq!(
            cluster
                .client(leader)
                .attach_hook(shard(i), Some(NodeId(2)), None)
                .await
                .unwrap(),
            Some(2)
        );
    }
    for id in [1, 2, 3, 4] {
        assert!(
            !cluster.has_exited(id),
            "replica {id} exited:\n{}",
            cluster.log_of(id)
        );
    }
    for i in 0..10 {
        assert_eq!(
            cluster.client(4).inspect(shard(i)).await.unwrap(),
            Some((2, NodeId(2)))
        );
    }
    assert!(
        cluster
            .log_of(4)
            .contains("Asking the cluster to remove it"),
        "{}",
        cluster.log_of(4)
    );
}

/// Whether the cluster still lists a replica that lost its disk is the leader's to say:
/// the replica it joins through may hold an older membership. Here that one was removed
/// while down and still lists the old three, not replica 4, which the cluster made a
/// voter meanwhile. Asked alone, it let the wiped replica 4 start Raft as the voter it
/// was, with an empty log and no vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_disk_asks_the_leader_whether_it_is_listed() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let stale = cluster.other_than(leader);
    cluster.kill(stale);
    cluster
        .client(leader)
        .remove_member(stale, false)
        .await
        .unwrap();
    let mut voters = cluster.running();
    cluster.join(4, leader).await;
    voters.push(4);
    voters.sort_unstable();
    cluster.wait_for_voters(&voters).await;
    cluster.attach_all(leader, 0..10, 1).await;
    cluster.wait_caught_up(4).await;

    // The removed replica comes back on its data dir: its membership is the old one.
    cluster.restart(stale).await;
    let view = &cluster;
    let members = wait_for(
        "the removed replica to answer",
        Duration::from_secs(30),
        || async move {
            let status = view.status_of(stale).await?;
            Some(status.members.iter().map(|m| m.id).collect::<Vec<_>>())
        },
    )
    .await;
    assert!(!members.contains(&4), "{members:?}");

    cluster.kill(4);
    cluster.wipe(4);
    cluster.launch_joining_through(4, cluster.url(stale));
    cluster.wait_for_voters(&voters).await;
    let view = &cluster;
    wait_for(
        "replica 4 to catch up again",
        Duration::from_secs(60),
        || async move {
            let found = view.client(4).inspect(shard(9)).await.ok()??;
            (found == (1, NodeId(1))).then_some(())
        },
    )
    .await;
    assert!(
        cluster
            .log_of(4)
            .contains("Asking the cluster to remove it"),
        "replica 4 voted again with an empty log:\n{}",
        cluster.log_of(4)
    );
}
