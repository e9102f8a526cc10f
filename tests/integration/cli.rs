//! The operator's commands, run as an operator runs them: the binary against a running
//! cluster, arguments parsed by clap, answers printed. Each command is one call of the
//! typed client that the other tests exercise directly; what these add is the command
//! line (`TSID:GEN` entries, flags, `--json`, tokens from a file or the environment).

use crate::support::{run_binary_with_env, shard, wait_for, TestCluster, DEADLINE};

fn ok(args: &[&str]) -> String {
    let (ok, text) = run_binary_with_env(args, &[]);
    assert!(ok, "{args:?} failed: {text}");
    text
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let text = ok(&with_json);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed {text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_and_node_command_works_through_a_follower() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let url = cluster.url(cluster.other_than(leader));
    let (one, two) = (shard(1).to_string(), shard(2).to_string());

    ok(&[
        "register-node",
        "--url",
        &url,
        "--node",
        "7",
        "--pg-addr",
        "ps-7",
        "--http-addr",
        "ps-7",
    ]);
    ok(&[
        "register-node",
        "--url",
        &url,
        "--node",
        "8",
        "--pg-addr",
        "ps-8",
        "--http-addr",
        "ps-8",
        "--availability-zone",
        "az-2",
    ]);
    let nodes = ok(&["nodes", "--url", &url]);
    assert!(
        nodes.contains("ps-7:6400") && nodes.contains("ps-8:9898"),
        "{nodes}"
    );
    // A port in a host flag is refused before anything is sent: registered, it would
    // be part of the host, and the corrected registration a conflict.
    for host in ["ps-9:6401", "10.0.0.9:6401", "[::1]:6401"] {
        let (registered, text) = run_binary_with_env(
            &[
                "register-node",
                "--url",
                &url,
                "--node",
                "9",
                "--pg-addr",
                host,
                "--http-addr",
                "ps-9",
            ],
            &[],
        );
        assert!(!registered && text.contains("--pg-port"), "{host}: {text}");
    }
    ok(&[
        "register-node",
        "--url",
        &url,
        "--node",
        "9",
        "--pg-addr",
        "::1",
        "--pg-port",
        "6401",
        "--http-addr",
        "ps-9",
    ]);
    assert!(ok(&["nodes", "--url", &url]).contains("::1:6401"));

    // Printing into a pipe whose reader is gone (`| head -1` after its line) ends the
    // command quietly, with success, rather than with a panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let closed = std::process::Command::new(crate::support::BIN)
        .args(["cluster", "status", "--url", &url])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(
        closed.status.success() && !stderr.contains("panicked"),
        "{:?}: {stderr}",
        closed.status
    );

    assert_eq!(
        json(&["attach", &one, "--node", "7", "--url", &url]),
        serde_json::json!({"gen": 1})
    );
    assert_eq!(
        json(&[
            "attach",
            &two,
            "--node",
            "7",
            "--generation-override",
            "41",
            "--url",
            &url
        ]),
        serde_json::json!({"gen": 42})
    );
    assert_eq!(
        json(&["inspect", &two, "--url", &url]),
        serde_json::json!({"attachment": [42, 7]})
    );
    let inspected = ok(&["inspect", &one, "--url", &url]);
    assert!(inspected.contains("generation 1 on node 7"), "{inspected}");

    // A restarting pageserver's re-attach: both shards one up.
    let re_attached = json(&["re-attach", "--node", "7", "--url", &url]);
    assert_eq!(
        re_attached,
        serde_json::json!({"tenants": [
            {"id": one, "gen": 2, "mode": "AttachedSingle"},
            {"id": two, "gen": 43, "mode": "AttachedSingle"}]})
    );

    // TSID:GEN entries: current, superseded, never seen.
    let unknown = shard(3).to_string();
    let verdicts = ok(&[
        "validate",
        &format!("{one}:2"),
        &format!("{two}:42"),
        &format!("{unknown}:1"),
        "--url",
        &url,
    ]);
    assert!(
        verdicts.contains(&format!("{one} generation 2: valid")),
        "{verdicts}"
    );
    assert!(
        verdicts.contains(&format!("{two} generation 42: NOT valid")),
        "{verdicts}"
    );
    assert!(
        verdicts.contains(&format!("{unknown} generation 1: unknown")),
        "{verdicts}"
    );
    let (succeeded, text) =
        run_binary_with_env(&["validate", &format!("{one}=2"), "--url", &url], &[]);
    assert!(!succeeded, "an entry without ':' was accepted: {text}");

    assert_eq!(
        json(&["migrate", &one, "--node", "8", "--url", &url]),
        serde_json::json!({"gen": 3})
    );
    assert_eq!(
        json(&["detach", &two, "--url", &url]),
        serde_json::json!({"gen": null})
    );
    assert_eq!(
        json(&["inspect", &two, "--url", &url]),
        serde_json::json!({"attachment": null})
    );
    let page = ok(&["tenants", "--url", &url, "--limit", "1"]);
    assert!(
        page.contains(&one) && page.contains("(more: --after"),
        "{page}"
    );
    let rest = ok(&["tenants", "--url", &url, "--after", &one]);
    assert!(rest.contains(&two) && !rest.contains(&one), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_transfer_and_remove_work_from_the_command_line() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let target = cluster.other_than(leader);
    let url = cluster.url(leader);
    ok(&[
        "cluster",
        "transfer",
        "--to",
        &target.to_string(),
        "--url",
        &url,
    ]);
    let view = &cluster;
    wait_for(
        "leadership to move to the replica named",
        DEADLINE,
        || async move { (view.leader_now().await == Some(target)).then_some(()) },
    )
    .await;
    let new_leader = target;
    // The old leader, a follower now, leaves.
    let removed = leader;
    ok(&[
        "cluster",
        "remove",
        "--id",
        &removed.to_string(),
        "--url",
        &cluster.url(new_leader),
    ]);
    cluster.kill(removed);
    let voters: Vec<u64> = (1..=3).filter(|id| *id != removed).collect();
    cluster.wait_for_voters(&voters).await;
}

/// `keygen` and `token` make everything a secured cluster needs; the commands take the
/// token from `--token-file` or from PAGESERVER_CONTROLLER_TOKEN, and a token of the
/// wrong scope is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_tokens_made_by_the_command_line_secure_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    ok(&[
        "keygen",
        "--private-key",
        &path("private.pem"),
        "--public-key",
        &path("public.pem"),
    ]);
    let mint = |scope: &str, file: &str| {
        let token = ok(&[
            "token",
            "--private-key",
            &path("private.pem"),
            "--scope",
            scope,
        ]);
        let token = token.trim().to_owned();
        std::fs::write(path(file), &token).unwrap();
        token
    };
    let admin = mint("admin", "admin.token");
    mint("controller_peer", "peer.token");
    let pageserver = mint("generations_api", "pageserver.token");
    let args = [
        "--auth-public-key".to_owned(),
        path("public.pem"),
        "--peer-token-file".to_owned(),
        path("peer.token"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = TestCluster::start_secure(3, &args, Some(admin.clone()), None).await;
    let url = cluster.url(cluster.wait_for_leader().await);
    let one = shard(1).to_string();

    let (succeeded, text) =
        run_binary_with_env(&["attach", &one, "--node", "1", "--url", &url], &[]);
    assert!(
        !succeeded && text.contains("401"),
        "without a token: {text}"
    );
    ok(&[
        "attach",
        &one,
        "--node",
        "1",
        "--url",
        &url,
        "--token-file",
        &path("admin.token"),
    ]);
    let (ok_env, text) = run_binary_with_env(
        &["inspect", &one, "--url", &url],
        &[("PAGESERVER_CONTROLLER_TOKEN", admin.as_str())],
    );
    assert!(ok_env && text.contains("generation 1 on node 1"), "{text}");
    assert!(!text.contains(&admin), "the token was printed");
    // A pageserver's token validates, and may not attach.
    let (valid, text) = run_binary_with_env(
        &["validate", &format!("{one}:1"), "--url", &url],
        &[("PAGESERVER_CONTROLLER_TOKEN", pageserver.as_str())],
    );
    assert!(
        valid && text.contains(&format!("{one} generation 1: valid")),
        "{text}"
    );
    let (attached, text) = run_binary_with_env(
        &[
            "attach",
            &one,
            "--node",
            "2",
            "--url",
            &url,
            "--token-file",
            &path("pageserver.token"),
        ],
        &[],
    );
    assert!(!attached && text.contains("403"), "{text}");
}
