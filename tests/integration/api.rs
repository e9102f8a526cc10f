//! Any replica answers, with the leader's answer, in Neon's wire format.

use pageserver_controller::api::types::NodeRegisterRequest;
use pageserver_controller::domain::NodeId;

use crate::support::{shard, TestCluster};

fn registration(node: u64, http_port: u16) -> NodeRegisterRequest {
    NodeRegisterRequest {
        node_id: NodeId(node),
        listen_pg_addr: format!("ps-{node}"),
        listen_pg_port: 6400,
        listen_http_addr: format!("ps-{node}"),
        listen_http_port: http_port,
        availability_zone_id: Some("az-a".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_through_a_follower_gives_the_leaders_answer() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = cluster.others_than(leader);
    let (a, b) = (cluster.client(followers[0]), cluster.client(followers[1]));
    let on_leader = cluster.client(leader);

    a.register_node(&registration(1, 9898)).await.unwrap();
    b.register_node(&registration(1, 9898))
        .await
        .expect("registering again is idempotent");
    let conflict = b.register_node(&registration(1, 9999)).await.unwrap_err();
    assert_eq!(conflict.status(), Some(409), "{conflict}");
    b.register_node(&registration(2, 9898)).await.unwrap();

    assert_eq!(
        a.attach_hook(shard(1), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        b.attach_hook(shard(1), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        a.attach_hook(shard(2), Some(NodeId(2)), Some(10))
            .await
            .unwrap(),
        Some(11)
    );
    assert_eq!(b.inspect(shard(1)).await.unwrap(), Some((2, NodeId(1))));
    assert_eq!(
        b.inspect(shard(1)).await.unwrap(),
        on_leader.inspect(shard(1)).await.unwrap()
    );

    let validated = a
        .validate(&[(shard(1), 1), (shard(1), 2), (shard(9), 1)])
        .await
        .unwrap();
    let answers: Vec<(String, bool)> = validated
        .tenants
        .iter()
        .map(|t| (t.id.to_string(), t.valid))
        .collect();
    assert_eq!(
        answers,
        vec![(shard(1).to_string(), false), (shard(1).to_string(), true)]
    );

    let re_attached = b.re_attach(NodeId(1), None).await.unwrap();
    assert_eq!(re_attached.tenants.len(), 1);
    assert_eq!(re_attached.tenants[0].id, shard(1));
    assert_eq!(re_attached.tenants[0].r#gen, Some(3));

    assert_eq!(a.migrate(shard(1), NodeId(2)).await.unwrap(), 4);
    assert_eq!(
        on_leader.inspect(shard(1)).await.unwrap(),
        Some((4, NodeId(2)))
    );
    assert_eq!(a.attach_hook(shard(1), None, None).await.unwrap(), None);
    assert_eq!(b.inspect(shard(1)).await.unwrap(), None, "detached");

    assert_eq!(
        a.list_nodes().await.unwrap(),
        on_leader.list_nodes().await.unwrap()
    );
    assert_eq!(b.get_node(NodeId(2)).await.unwrap().attached_shards, 1);
    assert_eq!(
        a.list_tenants(None, None).await.unwrap(),
        on_leader.list_tenants(None, None).await.unwrap()
    );
    assert_eq!(
        b.list_tenants(Some(shard(1)), Some(10))
            .await
            .unwrap()
            .len(),
        1
    );

    let missing = a.get_node(NodeId(77)).await.unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");
    let unknown = b.migrate(shard(5), NodeId(1)).await.unwrap_err();
    assert_eq!(unknown.status(), Some(404), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neon_wire_shapes_and_2023_paths() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    let url = cluster.url(follower);
    let http = reqwest::Client::new();
    let post =
        |path: &str, body: serde_json::Value| http.post(format!("{url}{path}")).json(&body).send();
    let tenant = "1f359dd625e519a1a4e8d7509690f6fc";
    let sharded = "1f359dd625e519a1a4e8d7509690f6fc-0102";

    // The first clients named the node `pageserver_id`.
    let attached: serde_json::Value = post(
        "/attach-hook",
        serde_json::json!({"tenant_id": tenant, "pageserver_id": 5}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(attached, serde_json::json!({"gen": 1}));
    let attached: serde_json::Value = post(
        "/debug/v1/attach-hook",
        serde_json::json!({"tenant_shard_id": sharded, "node_id": 5, "generation_override": null}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(attached, serde_json::json!({"gen": 1}));

    let legacy: serde_json::Value = post("/re-attach", serde_json::json!({"node_id": 5}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        legacy,
        serde_json::json!({"tenants": [
            {"id": tenant, "generation": 2, "gen": 2, "mode": "AttachedSingle"},
            {"id": sharded, "generation": 2, "gen": 2, "mode": "AttachedSingle"}]})
    );
    let current: serde_json::Value = post("/upcall/v1/re-attach", serde_json::json!({"node_id": 5, "register": {
        "node_id": 5, "listen_pg_addr": "ps-5", "listen_pg_port": 6400, "listen_http_addr": "ps-5", "listen_http_port": 9898,
        "availability_zone_id": "az-1", "listen_https_port": null}}))
        .await.unwrap().json().await.unwrap();
    assert_eq!(
        current,
        serde_json::json!({"tenants": [
        {"id": tenant, "gen": 3, "mode": "AttachedSingle"},
        {"id": sharded, "gen": 3, "mode": "AttachedSingle"}]})
    );

    let valid: serde_json::Value = post(
        "/validate",
        serde_json::json!({"tenants": [{"id": tenant, "gen": 3}, {"id": sharded, "gen": 2}]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        valid,
        serde_json::json!({"tenants": [{"id": tenant, "valid": true}, {"id": sharded, "valid": false}]})
    );
    // A 2023 pageserver reads a shard left out of the answer as valid: on its path an
    // unknown shard is answered, invalid. The current path leaves it out.
    let unknown = "00000000000000000000000000000077";
    let asked =
        serde_json::json!({"tenants": [{"id": unknown, "gen": 1}, {"id": tenant, "gen": 3}]});
    let answer = |path: &str, body: serde_json::Value| {
        let sent = post(path, body);
        async move {
            let response = sent.await.unwrap();
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    assert_eq!(
        answer("/validate", asked.clone()).await,
        serde_json::json!({"tenants": [{"id": tenant, "valid": true}, {"id": unknown, "valid": false}]})
    );
    assert_eq!(
        answer("/upcall/v1/validate", asked).await,
        serde_json::json!({"tenants": [{"id": tenant, "valid": true}]})
    );
    let inspected: serde_json::Value =
        post("/inspect", serde_json::json!({"tenant_shard_id": sharded}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(inspected, serde_json::json!({"attachment": [3, 5]}));
    let unknown: serde_json::Value = post(
        "/debug/v1/inspect",
        serde_json::json!({"tenant_shard_id": "00000000000000000000000000000000"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(unknown, serde_json::json!({"attachment": null}));
    let nodes: serde_json::Value = http
        .get(format!("{url}/control/v1/node/5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes["id"], 5);
    assert_eq!(nodes["listen_http_port"], 9898);

    // Newer clients send a migrate with the node only (here to the node the shard is
    // on: its generation stays); a body naming another shard than the path is refused.
    let migrate = |body: serde_json::Value| {
        http.put(format!("{url}/control/v1/tenant/{tenant}/migrate"))
            .json(&body)
            .send()
    };
    let moved = migrate(serde_json::json!({"node_id": 5})).await.unwrap();
    assert_eq!(moved.status(), 200);
    assert_eq!(
        moved.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"gen": 3})
    );
    let other = migrate(serde_json::json!({"tenant_shard_id": sharded, "node_id": 5}))
        .await
        .unwrap();
    assert_eq!(other.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_error_naming_the_problem() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    let http = reqwest::Client::new();
    // Node fields past a DNS name's length: refused, before they reach the log.
    let long = "h".repeat(256);
    let register = format!(
        r#"{{"node_id":7,"listen_pg_addr":"{long}","listen_pg_port":1,"listen_http_addr":"h","listen_http_port":2}}"#
    );
    let re_attach = format!(
        r#"{{"node_id":7,"register":{{"node_id":7,"listen_pg_addr":"h","listen_pg_port":1,"listen_http_addr":"h","listen_http_port":2,"availability_zone_id":"{long}"}}}}"#
    );
    for id in [leader, follower] {
        let url = cluster.url(id);
        let cases: Vec<(reqwest::Method, &str, &str, u16, &str)> = vec![
            (
                reqwest::Method::POST,
                "/control/v1/node",
                &register,
                400,
                "listen_pg_addr: 256 bytes",
            ),
            (
                reqwest::Method::POST,
                "/upcall/v1/re-attach",
                &re_attach,
                400,
                "register.availability_zone_id: 256 bytes",
            ),
            (
                reqwest::Method::GET,
                "/control/v1/node/+1",
                "",
                400,
                "not an unsigned integer",
            ),
            (
                reqwest::Method::POST,
                "/v1/cluster/members?timeout_s=18446744073709551615",
                r#"{"id":9,"url":"http://127.0.0.1:1"}"#,
                400,
                "timeout_s",
            ),
            (
                reqwest::Method::POST,
                "/upcall/v1/validate",
                "{",
                400,
                "invalid JSON",
            ),
            (
                reqwest::Method::POST,
                "/upcall/v1/validate",
                r#"{"tenants":[{"id":"XYZ","gen":1}]}"#,
                400,
                "tenants[0].id",
            ),
            (
                reqwest::Method::POST,
                "/upcall/v1/validate",
                r#"{"tenants":[{"id":"1f359dd625e519a1a4e8d7509690f6fc","gen":-1}]}"#,
                400,
                "tenants[0].gen",
            ),
            (
                reqwest::Method::POST,
                "/upcall/v1/re-attach",
                r#"{"node_id":"one"}"#,
                400,
                "node_id",
            ),
            (
                reqwest::Method::POST,
                "/debug/v1/attach-hook",
                r#"{"tenant_shard_id":"1f359dd625e519a1a4e8d7509690f6fc-0202","node_id":1}"#,
                400,
                "shard number must be below shard count",
            ),
            (
                reqwest::Method::POST,
                "/debug/v1/attach-hook",
                "",
                400,
                "empty",
            ),
            (
                reqwest::Method::POST,
                "/debug/v1/attach-hook",
                r#"{"tenant_shard_id":"1f359dd625e519a1a4e8d7509690f6fc","node_id":1,"generation_override":4294967295}"#,
                400,
                "generation_override",
            ),
            (
                reqwest::Method::POST,
                "/debug/v1/attach-hook",
                r#"{"tenant_shard_id":"1f359dd625e519a1a4e8d7509690f6fc","node_id":null,"generation_override":2147483648}"#,
                400,
                "generation_override: 2147483648 is above 2147483647",
            ),
            (
                reqwest::Method::GET,
                "/control/v1/node/%FF",
                "",
                400,
                "invalid path parameter",
            ),
            (
                reqwest::Method::DELETE,
                "/v1/cluster/members/%C3%28",
                "",
                400,
                "invalid path parameter",
            ),
            (
                reqwest::Method::GET,
                "/control/v1/node/abc",
                "",
                400,
                "not an unsigned integer",
            ),
            (
                reqwest::Method::PUT,
                "/control/v1/tenant/nope/migrate",
                r#"{"tenant_shard_id":"1f359dd625e519a1a4e8d7509690f6fc","node_id":1}"#,
                400,
                "tenant_shard_id in the path",
            ),
            (
                reqwest::Method::GET,
                "/control/v1/tenant?limit=0",
                "",
                400,
                "limit",
            ),
            (reqwest::Method::GET, "/no/such/route", "", 404, "no route"),
            (
                reqwest::Method::GET,
                "/upcall/v1/validate",
                "",
                405,
                "not allowed",
            ),
        ];
        for (method, path, body, status, needle) in cases {
            let response = http
                .request(method.clone(), format!("{url}{path}"))
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status().as_u16(),
                status,
                "{method} {path} {body} on replica {id}"
            );
            let error: serde_json::Value = response.json().await.expect("error bodies are JSON");
            let msg = error["msg"].as_str().expect("error has msg");
            assert!(
                msg.contains(needle),
                "{method} {path}: {msg:?} should mention {needle:?}"
            );
        }
    }
    // Nothing was created by all that.
    assert!(cluster
        .client(leader)
        .list_tenants(None, None)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attaches_share_log_entries_and_keep_their_own_answers() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let before = cluster
        .status_of(leader)
        .await
        .unwrap()
        .committed_index
        .unwrap();
    let http = reqwest::Client::new();
    // 200 writes at once: 40 to one shard (each must get its own generation) and 160 to
    // distinct shards (each must get generation 1).
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let client = pageserver_controller::client::Client::with_http(
                cluster.url(1 + u64::from(i) % 3),
                http.clone(),
            );
            let target = if i < 40 { shard(0) } else { shard(i) };
            tokio::spawn(async move {
                (
                    i,
                    client
                        .attach_hook(target, Some(NodeId(1)), None)
                        .await
                        .unwrap()
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut same_shard = Vec::new();
    for task in tasks {
        let (i, generation) = task.await.unwrap();
        if i < 40 {
            same_shard.push(generation);
        } else {
            assert_eq!(generation, 1, "shard {i} was attached once");
        }
    }
    same_shard.sort_unstable();
    assert_eq!(
        same_shard,
        (1..=40).collect::<Vec<u32>>(),
        "every attach got its own generation"
    );
    let after = cluster
        .status_of(leader)
        .await
        .unwrap()
        .committed_index
        .unwrap();
    assert!(
        after - before < 200,
        "200 concurrent writes took {} log entries: they were not batched",
        after - before
    );
}

/// A follower's request for a read index carries its latest vote; the leader of a
/// three-voter cluster counts it as that follower's acknowledgement (no heartbeat round)
/// only when it names the leader's own term and leadership and the two are a quorum.
///
/// The counters it reads are the leader's; an election on a busy machine moves them (and
/// the leadership the claims are about), so an attempt during which the leader or term
/// changed is run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_vote_stands_for_its_acknowledgement_only_when_it_matches() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    crate::support::attach_range(&cluster.client(leader), 0..4, 1).await;
    for attempt in 1..=3 {
        let leader = cluster.wait_for_leader().await;
        let Some(before) = cluster.status_of(leader).await else {
            continue;
        };
        let result = read_index_claims(&cluster, leader, before.term).await;
        let after = cluster.status_of(leader).await;
        if after.is_some_and(|a| (a.leader, a.term) == (Some(leader), before.term)) {
            if let Err(failure) = result {
                panic!("{failure}");
            }
            return;
        }
        eprintln!("attempt {attempt}: leadership moved during the checks; trying again");
    }
    panic!("leadership moved during each of three attempts");
}

/// One attempt of the test above against `leader` in `term`.
async fn read_index_claims(cluster: &TestCluster, leader: u64, term: u64) -> Result<(), String> {
    let follower = cluster.other_than(leader);
    let http = reqwest::Client::new();
    let counters = || async {
        let acks = cluster
            .metric(leader, "psc_read_index_asker_acks_total")
            .await;
        let rounds = cluster.metric(leader, "psc_read_index_rounds_total").await;
        (acks.unwrap_or(0.0) as u64, rounds.unwrap_or(0.0) as u64)
    };
    let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };

    // Validates through the follower: the leader answers their read indexes on the
    // follower's word.
    let (acks_before, _) = counters().await;
    let answer = cluster
        .client(follower)
        .validate(&[(shard(0), 1), (shard(1), 0)])
        .await
        .map_err(|e| format!("validate through the follower: {e}"))?;
    let valid: Vec<bool> = answer.tenants.iter().map(|t| t.valid).collect();
    assert_eq!(valid, [true, false]);
    let (acks, _) = counters().await;
    check(
        acks > acks_before,
        "no read index was acknowledged by the asker".into(),
    )?;

    // Asked directly, with claims that must not count: each takes a round.
    let ask = |query: String| {
        let http = http.clone();
        let url = format!("{}/v1/cluster/read-index?{query}", cluster.url(leader));
        async move {
            let response = http.get(url).send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            check(
                status == 200,
                format!("read-index answered {status}: {text}"),
            )
        }
    };
    for (claim, why) in [
        (
            format!("asker={follower}&term={}&voted_for={follower}", term + 1),
            "a later term",
        ),
        (
            format!("asker={follower}&term={term}&voted_for={follower}"),
            "another candidate",
        ),
        (
            format!("asker={leader}&term={term}&voted_for={leader}"),
            "the leader itself",
        ),
        (
            format!("asker=99&term={term}&voted_for={leader}"),
            "not a voter",
        ),
    ] {
        let (acks, rounds) = counters().await;
        ask(claim).await?;
        let (acks_after, rounds_after) = counters().await;
        check(
            acks_after == acks,
            format!("{why} was taken for an acknowledgement"),
        )?;
        check(rounds_after > rounds, format!("{why}: no heartbeat round"))?;
    }
    let (acks, rounds) = counters().await;
    ask(format!("asker={follower}&term={term}&voted_for={leader}")).await?;
    let (acks_after, rounds_after) = counters().await;
    check(
        acks_after == acks + 1,
        format!("a matching vote is an acknowledgement ({acks} -> {acks_after})"),
    )?;
    check(
        rounds_after == rounds,
        format!("and no round is needed ({rounds} -> {rounds_after})"),
    )?;
    let bad = http
        .get(format!(
            "{}/v1/cluster/read-index?asker=x",
            cluster.url(leader)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    Ok(())
}

/// A request that a replica forwarded is never forwarded again: a replica that is not the
/// leader either (leadership moved meanwhile) answers "not the leader", unapplied, and
/// the first replica routes it afresh. Two replicas that each thought the other led
/// would otherwise pass it back and forth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_is_never_forwarded_again() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.others_than(leader);
    let forwarded_before = cluster
        .metric(followers[1], "psc_forwarded_requests_total")
        .await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/debug/v1/attach-hook",
            cluster.url(followers[1])
        ))
        .header("x-controller-forwarded-by", followers[0].to_string())
        .json(&serde_json::json!({"tenant_shard_id": shard(9).to_string(), "node_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("x-controller-not-leader"));
    let body = response.text().await.unwrap();
    assert!(body.contains("is not the leader"), "{body}");
    assert_eq!(
        cluster.client(leader).inspect(shard(9)).await.unwrap(),
        None,
        "the bounced request was applied"
    );
    assert_eq!(
        cluster
            .metric(followers[1], "psc_forwarded_requests_total")
            .await,
        forwarded_before,
        "the follower forwarded a forwarded request"
    );
}
