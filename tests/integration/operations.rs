//! Backup and restore, disaster recovery, metrics, readiness, bounded data dirs, logs.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pageserver_controller::api::types::NodeRegisterRequest;
use pageserver_controller::client::{retry, Client};
use pageserver_controller::domain::NodeId;

use crate::support::{
    attach_range, free_port, hold_request_open, run_binary, shard, wait_for, wait_ready,
    TestCluster, BIN, DEADLINE,
};

const BUMP: u32 = 1000;

/// The highest generation among `shards`: where the floor starts before the bump.
fn highest(shards: &[pageserver_controller::api::types::TenantShardDescribe]) -> u32 {
    shards
        .iter()
        .filter_map(|s| s.generation)
        .max()
        .unwrap_or(0)
}

fn run(args: &[&str]) -> String {
    let (ok, text) = run_binary(args);
    assert!(ok, "{args:?} failed: {text}");
    text
}

/// A replica started on a seeded data dir (restore or recover), killed on drop.
struct Seeded(Child);

impl Drop for Seeded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_seeded(id: u64, port: u16, data_dir: &std::path::Path, log: &std::path::Path) -> Seeded {
    let log = std::fs::File::create(log).unwrap();
    Seeded(
        Command::new(BIN)
            .args([
                "serve",
                "--id",
                &id.to_string(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_with_generations_above_the_original() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    client
        .register_node(&NodeRegisterRequest {
            node_id: NodeId(7),
            listen_pg_addr: "ps-7".into(),
            listen_pg_port: 6400,
            listen_http_addr: "ps-7".into(),
            listen_http_port: 9898,
            availability_zone_id: None,
        })
        .await
        .unwrap();
    attach_range(&client, 0..20, 7).await;
    client.attach_hook(shard(3), None, None).await.unwrap();
    let original = client.list_tenants(None, None).await.unwrap();

    let follower = cluster.other_than(leader);
    let file = cluster.root().join("backup.psc");
    let printed = run(&[
        "backup",
        "--url",
        &cluster.url(follower),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(printed.contains("20 tenant shards"), "{printed}");
    // Downloaded by hand through a follower, it keeps the name it is saved under.
    let response = reqwest::get(format!("{}/v1/backup", cluster.url(follower)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"pageserver-controller.backup\""
    );
    // A shard created after the backup: a pageserver holds its generation 1, which the
    // backup cannot know.
    assert_eq!(
        client
            .attach_hook(shard(50), Some(NodeId(7)), None)
            .await
            .unwrap(),
        Some(1)
    );

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let restored_dir = cluster.root().join("restored-1");
    run(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        restored_dir.to_str().unwrap(),
        "--id",
        "1",
        "--advertise-url",
        &url,
        "--generation-bump",
        &BUMP.to_string(),
    ]);
    let _restored = serve_seeded(
        1,
        port,
        &restored_dir,
        &cluster.root().join("restored-1.log"),
    );
    let restored = Client::new(&url);
    wait_ready(&restored).await;

    let after = restored.list_tenants(None, None).await.unwrap();
    assert_eq!(after.len(), original.len());
    for (before, now) in original.iter().zip(&after) {
        assert_eq!(before.tenant_shard_id, now.tenant_shard_id);
        assert_eq!(before.node_id, now.node_id);
        assert_eq!(
            now.generation,
            before.generation.map(|g| g + BUMP),
            "every generation is raised"
        );
    }
    let old = original[0].generation.unwrap();
    let answers = restored
        .validate(&[(original[0].tenant_shard_id, old)])
        .await
        .unwrap();
    assert!(
        !answers.tenants[0].valid,
        "no generation from before the backup is valid"
    );
    assert_eq!(
        restored
            .attach_hook(shard(0), Some(NodeId(7)), None)
            .await
            .unwrap(),
        Some(old + BUMP + 1)
    );
    assert_eq!(
        restored
            .attach_hook(shard(50), Some(NodeId(7)), None)
            .await
            .unwrap(),
        Some(highest(&original) + BUMP + 1),
        "a shard the backup never saw starts above the floor (the highest generation the \
         backup held, plus the bump), not at 1"
    );
    assert_eq!(
        restored.get_node(NodeId(7)).await.unwrap().listen_http_addr,
        "ps-7"
    );
    let status = restored.cluster_status().await.unwrap();
    assert_ne!(
        status.cluster_id,
        cluster.status_of(leader).await.unwrap().cluster_id,
        "a restore is a new cluster"
    );

    // A restore cut short (here: everything but the identity gone, as a crash right
    // after writing it leaves the dir) is refused at start, not served empty.
    let cut_short = cluster.root().join("restored-cut-short");
    run(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        cut_short.to_str().unwrap(),
        "--id",
        "1",
        "--advertise-url",
        &url,
    ]);
    for entry in std::fs::read_dir(&cut_short).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "identity.json" {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    let refused_log = cluster.root().join("restored-cut-short.log");
    let mut serving = serve_seeded(1, free_port(), &cut_short, &refused_log);
    let status = wait_for("serve to refuse the data dir", DEADLINE, || {
        let exited = serving.0.try_wait().unwrap();
        async move { exited }
    })
    .await;
    let stderr = std::fs::read_to_string(&refused_log).unwrap();
    assert!(
        !status.success() && stderr.contains("a restore into it did not finish"),
        "{stderr}"
    );

    // A newer backup format is refused with a message.
    let mut newer = std::fs::read(&file).unwrap();
    newer[8] = 99;
    let newer_file = cluster.root().join("newer.psc");
    std::fs::write(&newer_file, newer).unwrap();
    let output = Command::new(BIN)
        .args([
            "restore",
            "--from",
            newer_file.to_str().unwrap(),
            "--id",
            "1",
            "--advertise-url",
            &url,
        ])
        .arg("--data-dir")
        .arg(cluster.root().join("restored-2"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("newer"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_majority_is_recovered_from_a_survivor_and_grows_again() {
    let mut cluster = TestCluster::start_with(3, &["--snapshot-every", "10"]).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader);
    attach_range(&client, 0..25, 1).await;
    let original = client.list_tenants(None, None).await.unwrap();
    // A leader's last entry is of its own term (its first entry as leader is): what an
    // operator compares to pick the survivor with the most recent log.
    let status = wait_for(
        "a leader to report its last entry's term",
        DEADLINE,
        || async {
            let leader = cluster.leader_now().await?;
            let status = cluster.status_of(leader).await?;
            (status.state == "leader" && status.last_log_term == Some(status.term))
                .then_some(status)
        },
    )
    .await;
    let old_cluster = status.cluster_id;
    let survivor = cluster.other_than(leader);
    cluster.wait_caught_up(survivor).await;
    for id in cluster.running() {
        cluster.kill(id);
    }
    let dir = cluster.replicas[&survivor].data_dir.clone();
    let id = survivor.to_string();

    // Refused without the confirmation flag.
    let output = Command::new(BIN)
        .args(["recover", "--id", &id])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--confirm-other-replicas-are-lost"));
    // A bump of 0 would hand out again any generation the lost majority issued.
    let output = Command::new(BIN)
        .args(["recover", "--id", &id, "--generation-bump", "0"])
        .arg("--confirm-other-replicas-are-lost")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--generation-bump"));
    run(&[
        "recover",
        "--id",
        &id,
        "--data-dir",
        dir.to_str().unwrap(),
        "--generation-bump",
        &BUMP.to_string(),
        "--confirm-other-replicas-are-lost",
    ]);
    cluster.restart(survivor).await;
    let client = cluster.client(survivor);
    wait_ready(&client).await;
    let after = client.list_tenants(None, None).await.unwrap();
    for (before, now) in original.iter().zip(&after) {
        assert_eq!(now.generation, before.generation.map(|g| g + BUMP));
    }
    // Fresh replicas join the recovered cluster.
    cluster.join(4, survivor).await;
    cluster.wait_for_voters(&[survivor, 4]).await;
    assert_eq!(
        cluster
            .client(4)
            .inspect(shard(3))
            .await
            .unwrap()
            .unwrap()
            .0,
        original[3].generation.unwrap() + BUMP
    );
    // The floor travelled with the snapshot the new replica caught up from: a shard the
    // survivor never saw (the lost majority may have issued its generations) starts above
    // it, whichever replica takes the attach.
    assert_eq!(
        cluster
            .client(4)
            .attach_hook(shard(99), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(highest(&original) + BUMP + 1)
    );

    // The recovered cluster is a new cluster. A replica declared lost that starts again on
    // its old data dir anyway (its state lacks the raise) is refused by the survivor,
    // and its reads, without a quorum of its old cluster, are errors, not old answers.
    let recovered = client.cluster_status().await.unwrap().cluster_id;
    assert_ne!(recovered, old_cluster);
    cluster.restart(leader).await;
    cluster
        .wait_for_log(survivor, "but this replica belongs to cluster", 1)
        .await;
    assert!(cluster.log_of(survivor).contains(&old_cluster));
    let stale = original[3].generation.unwrap();
    let answer = cluster.client(leader).validate(&[(shard(3), stale)]).await;
    assert!(
        answer.is_err(),
        "a replica of the old cluster answered {answer:?}"
    );
    let recovered_answer = cluster
        .client(survivor)
        .validate(&[(shard(3), stale)])
        .await
        .unwrap();
    assert!(!recovered_answer.tenants[0].valid, "{recovered_answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_refuses_a_data_dir_in_use() {
    let cluster = TestCluster::start(3).await;
    recovery_fails_saying(&cluster.replicas[&1].data_dir, "in use by another process");
}

/// Runs `recover` on replica 1's `dir`, which must fail with `reason` in its message.
fn recovery_fails_saying(dir: &std::path::Path, reason: &str) {
    let output = Command::new(BIN)
        .args(["recover", "--id", "1", "--confirm-other-replicas-are-lost"])
        .args(["--advertise-url", "http://127.0.0.1:1", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(reason),
        "{stderr}"
    );
}

/// A data dir that holds no state (here, a restore cut short once its identity was
/// written) is no survivor to recover from: its generations would start from the bump
/// alone, below what the cluster may have handed out.
#[test]
fn recovery_refuses_a_data_dir_that_holds_no_state() {
    use controller_storage::data_dir::{Bootstrap, DataDir, Identity};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r1");
    let identity = Identity {
        format_version: controller_storage::FORMAT_VERSION,
        cluster_name: "psc".into(),
        cluster_id: "restored".into(),
        replica_id: 1,
        bootstrap: Bootstrap::Seeded,
    };
    drop(DataDir::create(&dir, identity).unwrap());
    recovery_fails_saying(&dir, "holds no state");
}

/// Checks the Prometheus text format line by line; returns the sample names.
fn parse_prometheus(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
        names.push(name.to_owned());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_the_operational_series() {
    // Snapshots often enough that the attaches below build one.
    let cluster = TestCluster::start_with(3, &["--snapshot-every", "10"]).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    let via_follower = cluster.client(follower);
    attach_range(&via_follower, 0..30, 1).await;
    via_follower.validate(&[(shard(1), 1)]).await.unwrap();
    let http = reqwest::Client::new();
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    // Methods nobody uses are counted as one label: inventing them adds no series.
    for invented in ["FROBNICATE", "FROBNICATE2"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
        http.request(method, format!("{}/status", cluster.url(leader)))
            .send()
            .await
            .unwrap();
    }
    // Paths no route serves are counted under one route label, whatever the path.
    for wrong in ["/upcall/v2/validate", "/upcall/v1/validate/x"] {
        let answer = http
            .post(format!("{}{wrong}", cluster.url(leader)))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404);
    }
    // A snapshot was built on the leader, and its duration is there.
    let metrics_of = |id: u64| {
        let http = http.clone();
        let url = format!("{}/metrics", cluster.url(id));
        async move { http.get(url).send().await.ok()?.text().await.ok() }
    };
    let built = wait_for("the leader to build a snapshot", DEADLINE, || async {
        let text = metrics_of(leader).await?;
        (value(&text, "psc_snapshot_builds_total")? >= 1.0).then_some(text)
    })
    .await;
    assert!(
        value(&built, "psc_snapshot_build_seconds").is_some_and(|s| s > 0.0),
        "{built}"
    );
    for (id, must_have) in [
        (
            leader,
            vec![
                "psc_http_requests_total",
                "psc_http_request_duration_seconds_bucket",
                "psc_raft_term",
                "psc_raft_committed_index",
                "psc_raft_applied_index",
                "psc_raft_purged_index",
                "psc_raft_log_entries",
                "psc_raft_leader_changes_total",
                "psc_storage_flush_duration_seconds_bucket",
                "psc_snapshot_build_seconds",
                "psc_snapshot_install_seconds",
                "psc_tenant_shards",
                "psc_nodes",
                "psc_replication_lag_entries",
                "psc_raft_proposed_commands_total",
                "psc_read_index_asker_acks_total",
                "process_resident_memory_bytes",
            ],
        ),
        (
            follower,
            vec![
                "psc_forwarded_requests_total",
                "psc_data_dir_bytes",
                "psc_data_dir_free_bytes",
            ],
        ),
    ] {
        let response = http
            .get(format!("{}/metrics", cluster.url(id)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let names = parse_prometheus(&text);
        for series in must_have {
            assert!(
                names.iter().any(|n| n == series),
                "replica {id} lacks {series}:\n{text}"
            );
        }
        if id == leader {
            assert!(text.contains("psc_tenant_shards 30"), "{text}");
            assert!(
                !text.contains("FROBNICATE")
                    && text
                        .lines()
                        .any(|l| l.starts_with("psc_http_requests_total{")
                            && l.contains("route=\"/status\"")
                            && l.contains("method=\"other\"")),
                "{text}"
            );
            assert!(text.contains("route=\"/debug/v1/attach-hook\""), "{text}");
            assert!(
                text.lines().any(|l| l
                    == "psc_http_requests_total{method=\"POST\",route=\"unmatched\",status=\"404\"} 2"),
                "{text}"
            );
            assert!(!text.contains("/upcall/v2/validate"), "{text}");
            // Requests by route, method and status: the five attaches forwarded to the
            // leader were answered 200 there.
            let attaches: f64 = text
                .lines()
                .filter(|l| {
                    l.starts_with("psc_http_requests_total{")
                        && l.contains("route=\"/debug/v1/attach-hook\"")
                        && l.contains("method=\"POST\"")
                        && l.contains("status=\"200\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert!(attaches >= 5.0, "{attaches} attaches counted:\n{text}");
            // Replication lag per follower, as the leader sees it.
            for member in cluster.others_than(leader) {
                assert!(
                    text.lines().any(|l| l.starts_with(&format!(
                        "psc_replication_lag_entries{{member=\"{member}\"}}"
                    ))),
                    "no lag series for follower {member}:\n{text}"
                );
            }
        } else {
            let free: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("psc_data_dir_free_bytes "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no psc_data_dir_free_bytes value:\n{text}"));
            assert!(free > 0.0, "{free} bytes free where the tests write");
            // The validate above was a read round of this follower: it asked the leader
            // (which takes time) and applied what the leader had committed.
            let rounds = value(&text, "psc_follower_read_rounds_total");
            let asking = value(&text, "psc_follower_read_fetch_microseconds_total");
            assert!(
                rounds.is_some_and(|r| r >= 1.0) && asking.is_some_and(|a| a > 0.0),
                "no follower read round counted:\n{text}"
            );
            assert!(
                value(&text, "psc_follower_read_apply_wait_microseconds_total").is_some(),
                "{text}"
            );
        }
    }

    // A request in flight is counted for as long as it lasts, also when its client hangs
    // up before it is answered.
    let in_flight =
        |text: Option<String>| value(&text?, "psc_http_requests_in_flight{kind=\"api\"}");
    let held = hold_request_open(&cluster.url(leader)).await;
    let text = metrics_of(leader).await;
    let peer = value(
        text.as_deref().unwrap_or_default(),
        "psc_http_requests_in_flight{kind=\"peer\"}",
    );
    assert!(peer.is_some(), "no peer in-flight gauge: {text:?}");
    let during = in_flight(text).expect("an in-flight gauge");
    assert!(
        during >= 1.0,
        "{during} requests in flight while one is held"
    );
    drop(held);
    wait_for("the held request to be counted out", DEADLINE, || {
        let metrics = metrics_of(leader);
        async move { (in_flight(metrics.await)? == 0.0).then_some(()) }
    })
    .await;

    // The shipped alert rules (deploy/prometheus/alerts.yaml) read only series that the
    // replicas export, and the series their cluster-wide rules compare are there on
    // every replica: a voter that knows its leader.
    // (Waited for: on a busy machine an election may move the leader meanwhile.)
    let exported = wait_for("every replica to report its place", DEADLINE, || async {
        let leader = cluster.leader_now().await?;
        let mut exported = std::collections::BTreeSet::new();
        for id in cluster.running() {
            let text = metrics_of(id).await?;
            let expected = [
                ("psc_raft_is_voter", 1.0),
                ("psc_raft_is_member", 1.0),
                ("psc_raft_has_leader", 1.0),
                ("psc_raft_voters", 3.0),
                ("psc_removed", 0.0),
                ("psc_raft_is_leader", if id == leader { 1.0 } else { 0.0 }),
            ];
            if expected
                .iter()
                .any(|(series, want)| value(&text, series) != Some(*want))
            {
                return None;
            }
            // A leader hears from a quorum with every heartbeat; elsewhere the age is 0.
            let age = value(&text, "psc_raft_leader_quorum_ack_age_seconds")?;
            if !(if id == leader { age < 5.0 } else { age == 0.0 }) {
                return None;
            }
            exported.extend(parse_prometheus(&text));
        }
        Some(exported)
    })
    .await;
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yaml"),
    )
    .unwrap();
    let read_by_rules = metric_names_in(&rules);
    assert!(read_by_rules.len() >= 10, "{read_by_rules:?}");
    // Exported only by a replica that serves TLS, which these do not; the TLS tests
    // (security::certificates_and_the_ca_rotate_without_a_restart) read it.
    let only_with_tls = ["psc_tls_not_after_timestamp_seconds"];
    for name in read_by_rules
        .iter()
        .filter(|name| !only_with_tls.contains(&name.as_str()))
    {
        assert!(
            exported.contains(name),
            "alerts.yaml reads {name}, which no replica exports"
        );
    }
}

/// The metric names (`psc_...`, `process_...`) that appear in `text`.
fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = std::collections::BTreeSet::new();
    for (start, _) in text
        .match_indices("psc_")
        .chain(text.match_indices("process_"))
    {
        let preceded_by_name = text[..start].chars().next_back().is_some_and(is_name_char);
        if !preceded_by_name {
            let rest = &text[start..];
            let end = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_without_a_quorum() {
    let mut cluster = TestCluster::start(3).await;
    for id in [1, 2, 3] {
        wait_ready(&cluster.client(id)).await;
    }
    cluster.kill(2);
    cluster.kill(3);
    let client = cluster.client(1);
    let not_ready = wait_for("replica 1 to report not ready", DEADLINE, || {
        let client = client.clone();
        async move { client.ready().await.err() }
    })
    .await;
    assert_eq!(not_ready.status(), Some(503), "{not_ready}");
    assert_eq!(
        client.status().await.unwrap().replica_id,
        1,
        "/status stays up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_replica_id() {
    let output = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "serve",
            "--id",
            "4",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path().join("empty"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON log line");
    let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(parsed["replica"], 4);
    assert_eq!(parsed["level"], "ERROR");
    assert!(parsed["message"]
        .as_str()
        .unwrap()
        .contains("--initial-cluster"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_attaches_leave_a_bounded_data_dir() {
    let cluster = TestCluster::start_with(
        3,
        &["--snapshot-every", "500", "--snapshot-keep-entries", "100"],
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let http = reqwest::Client::new();
    let size = |id: u64| pageserver_controller::metrics::dir_size(&cluster.replicas[&id].data_dir);
    let mut sizes = Vec::new();
    for round in 0..4u32 {
        let tasks: Vec<_> = (0..64u32)
            .map(|worker| {
                let client = Client::with_http(cluster.url(leader), http.clone())
                    .with_timeout(Duration::from_secs(30));
                tokio::spawn(async move {
                    for i in 0..(25_000 / 64 + 1) {
                        let n = (worker * 7919 + i * 31 + round) % 5_000;
                        // Like a pageserver: a 503 during a (rare) election is retried.
                        retry(
                            DEADLINE,
                            Duration::from_millis(50),
                            Duration::from_millis(500),
                            || client.attach_hook(shard(n), Some(NodeId(u64::from(i % 4))), None),
                        )
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        sizes.push(size(leader));
        eprintln!(
            "after {}k attaches: data dir {} bytes",
            (round + 1) * 25,
            sizes.last().unwrap()
        );
    }
    let status = cluster.status_of(leader).await.unwrap();
    assert!(status.purged_index.unwrap_or(0) > 0, "{status:?}");
    // The registry has at most 5,000 shards; once snapshots and purges run, the data dir
    // must stop growing with the number of attaches.
    let (first, last) = (sizes[1], *sizes.last().unwrap());
    assert!(
        last < 64 << 20,
        "data dir is {last} bytes after 100k attaches: {sizes:?}"
    );
    assert!(
        last < first * 2,
        "data dir keeps growing with attaches: {sizes:?}"
    );
}
