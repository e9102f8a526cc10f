//! Authentication, authorization, peer authentication, limits and TLS, against real
//! replicas started with keys.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pageserver_controller::auth::{generate_key_pair, mint, Scope, TOKEN_ENV};
use pageserver_controller::client::Client;
use pageserver_controller::consensus::{Proposal, TypeConfig};
use pageserver_controller::domain::{Command as DomainCommand, NodeId};
use reqwest::Method;

use crate::support::{shard, wait_for, TestCluster, BIN, DEADLINE};

const ALL_SCOPES: [Scope; 8] = [
    Scope::Tenant,
    Scope::PageServerApi,
    Scope::GenerationsApi,
    Scope::SafekeeperData,
    Scope::Admin,
    Scope::Infra,
    Scope::Scrubber,
    Scope::ControllerPeer,
];

struct Keys {
    dir: tempfile::TempDir,
    private: String,
    public: String,
}

impl Keys {
    fn new() -> Keys {
        let (private, public) = generate_key_pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("public.pem"), &public).unwrap();
        let keys = Keys {
            dir,
            private,
            public,
        };
        std::fs::write(
            keys.dir.path().join("peer.token"),
            keys.token(Scope::ControllerPeer),
        )
        .unwrap();
        keys
    }

    fn token(&self, scope: Scope) -> String {
        mint(self.private.as_bytes(), scope, None, None).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--auth-public-key".into(),
            self.path("public.pem").display().to_string(),
            "--peer-token-file".into(),
            self.path("peer.token").display().to_string(),
        ]
    }
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Tokens that must be refused whatever the route: (name, token).
fn hostile_tokens(keys: &Keys) -> Vec<(&'static str, String)> {
    let claims = serde_json::json!({"scope": "admin"});
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(keys.public.as_bytes()),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let rsa = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rsa-test-key.pem"
    ))
    .unwrap();
    let rs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    let expired = {
        let key = EncodingKey::from_ed_pem(keys.private.as_bytes()).unwrap();
        jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &serde_json::json!({"scope": "admin", "exp": 1000}),
            &key,
        )
        .unwrap()
    };
    let (other_private, _) = generate_key_pair().unwrap();
    let foreign = mint(other_private.as_bytes(), Scope::Admin, None, None).unwrap();
    vec![
        ("HS256 with the public key as secret", hs256),
        ("alg none", none),
        ("RS256", rs256),
        ("expired", expired),
        ("signed by another key", foreign),
        ("garbage", "not.a.token".into()),
    ]
}

struct Endpoint {
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
    /// `None`: public. `Some(scopes)`: these or admin.
    allowed: Option<&'static [Scope]>,
}

fn endpoints(cluster: &TestCluster, leader: u64) -> Vec<Endpoint> {
    use serde_json::json;
    let tenant = shard(1).to_string();
    let e = |method: Method,
             path: &str,
             body: Option<serde_json::Value>,
             allowed: Option<&'static [Scope]>| Endpoint {
        method,
        path: path.to_owned(),
        body,
        allowed,
    };
    let register = json!({"node_id": 1, "listen_pg_addr": "ps-1", "listen_pg_port": 6400,
                          "listen_http_addr": "ps-1", "listen_http_port": 9898});
    vec![
        e(
            Method::POST,
            "/upcall/v1/re-attach",
            Some(json!({"node_id": 1})),
            Some(&[Scope::GenerationsApi]),
        ),
        e(
            Method::POST,
            "/upcall/v1/validate",
            Some(json!({"tenants": []})),
            Some(&[Scope::GenerationsApi]),
        ),
        e(
            Method::POST,
            "/re-attach",
            Some(json!({"node_id": 1})),
            Some(&[Scope::GenerationsApi]),
        ),
        e(
            Method::POST,
            "/validate",
            Some(json!({"tenants": []})),
            Some(&[Scope::GenerationsApi]),
        ),
        e(
            Method::POST,
            "/debug/v1/attach-hook",
            Some(json!({"tenant_shard_id": tenant, "node_id": 1})),
            Some(&[]),
        ),
        e(
            Method::POST,
            "/attach-hook",
            Some(json!({"tenant_id": tenant, "node_id": 1})),
            Some(&[]),
        ),
        e(
            Method::POST,
            "/debug/v1/inspect",
            Some(json!({"tenant_shard_id": tenant})),
            Some(&[]),
        ),
        e(
            Method::POST,
            "/inspect",
            Some(json!({"tenant_shard_id": tenant})),
            Some(&[]),
        ),
        e(
            Method::POST,
            "/control/v1/node",
            Some(register),
            Some(&[Scope::Infra]),
        ),
        e(Method::GET, "/control/v1/node", None, Some(&[Scope::Infra])),
        e(
            Method::GET,
            "/control/v1/node/1",
            None,
            Some(&[Scope::Infra]),
        ),
        e(
            Method::PUT,
            "/control/v1/node/1/config",
            Some(json!({"node_id": 1, "scheduling": "Active"})),
            Some(&[]),
        ),
        e(Method::DELETE, "/control/v1/node/999", None, Some(&[])),
        e(
            Method::PUT,
            &format!("/control/v1/tenant/{tenant}/migrate"),
            Some(json!({"tenant_shard_id": tenant, "node_id": 1})),
            Some(&[]),
        ),
        e(Method::GET, "/control/v1/tenant", None, Some(&[])),
        e(
            Method::GET,
            "/v1/cluster",
            None,
            Some(&[Scope::ControllerPeer]),
        ),
        e(
            Method::GET,
            "/v1/cluster/read-index",
            None,
            Some(&[Scope::ControllerPeer]),
        ),
        e(
            Method::POST,
            "/v1/cluster/members",
            Some(json!({"id": leader, "url": cluster.url(leader)})),
            Some(&[Scope::ControllerPeer]),
        ),
        e(
            Method::DELETE,
            "/v1/cluster/members/99",
            None,
            Some(&[Scope::ControllerPeer]),
        ),
        // On the leader, it hands leadership away; the transfer below brings it back.
        e(
            Method::POST,
            "/v1/cluster/step-down",
            None,
            Some(&[Scope::ControllerPeer]),
        ),
        e(
            Method::POST,
            "/v1/cluster/leader",
            Some(json!({"id": leader})),
            Some(&[]),
        ),
        e(Method::GET, "/v1/backup", None, Some(&[])),
        e(Method::GET, "/status", None, None),
        e(Method::GET, "/ready", None, None),
        e(Method::GET, "/metrics", None, None),
    ]
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    endpoint: &Endpoint,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = http.request(endpoint.method.clone(), format!("{base}{}", endpoint.path));
    if let Some(body) = &endpoint.body {
        request = request.json(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_checks_scopes_like_neon_through_any_replica() {
    let keys = Keys::new();
    let args = keys.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = TestCluster::start_secure(3, &args, Some(keys.token(Scope::Admin)), None).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    let http = reqwest::Client::new();
    let hostile = hostile_tokens(&keys);
    for id in [follower, leader] {
        let base = cluster.url(id);
        for endpoint in endpoints(&cluster, leader) {
            let what = format!("{} {} on replica {id}", endpoint.method, endpoint.path);
            let (status, body) = call(&http, &base, &endpoint, None).await;
            match endpoint.allowed {
                None => assert!(
                    status != 401 && status != 403,
                    "{what} is public, got {status} {body}"
                ),
                Some(_) => {
                    assert_eq!(status, 401, "{what} without a token: {body}");
                    assert!(
                        body.contains("Unauthorized: missing authorization header"),
                        "{what}: {body}"
                    );
                    // Not a bearer token at all: 401 too, as Neon answers it.
                    let malformed = http
                        .request(endpoint.method.clone(), format!("{base}{}", endpoint.path))
                        .header("authorization", "Basic YWRtaW46YWRtaW4=")
                        .send()
                        .await
                        .unwrap();
                    let status = malformed.status().as_u16();
                    let body = malformed.text().await.unwrap_or_default();
                    assert_eq!(status, 401, "{what} with a basic header: {body}");
                    assert!(
                        body.contains("Unauthorized: malformed authorization header"),
                        "{what}: {body}"
                    );
                }
            }
            for scope in ALL_SCOPES {
                let (status, body) = call(&http, &base, &endpoint, Some(&keys.token(scope))).await;
                let allowed = endpoint
                    .allowed
                    .is_none_or(|s| scope == Scope::Admin || s.contains(&scope));
                if allowed {
                    assert!(
                        status != 401 && status != 403,
                        "{what} with {scope:?} is allowed, got {status} {body}"
                    );
                } else {
                    assert_eq!(status, 403, "{what} with {scope:?}: {body}");
                    assert!(
                        body.contains("Forbidden: JWT authentication error"),
                        "{what}: {body}"
                    );
                }
            }
            if endpoint.allowed.is_some() {
                for (name, token) in &hostile {
                    let (status, body) = call(&http, &base, &endpoint, Some(token)).await;
                    assert_eq!(status, 403, "{what} with a token {name}: {body}");
                }
            }
        }
    }
    // A follower's readiness asks the leader for a read index with its peer token.
    crate::support::wait_ready(&cluster.client(follower)).await;
    // A read index asked with a follower's vote counts that vote as the follower's
    // acknowledgement: only when a replica asks, never an admin.
    let term = cluster.status_of(leader).await.unwrap().term;
    let acks = || cluster.metric(leader, "psc_read_index_asker_acks_total");
    for (scope, counted) in [(Scope::Admin, 0.0), (Scope::ControllerPeer, 3.0)] {
        let before = acks().await.unwrap_or(0.0);
        for _ in 0..3 {
            let response = http
                .get(format!(
                    "{}/v1/cluster/read-index?asker={follower}&term={term}&voted_for={leader}",
                    cluster.url(leader)
                ))
                .bearer_auth(keys.token(scope))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }
        let after = acks().await.unwrap_or(0.0);
        assert_eq!(after - before, counted, "{scope:?}");
    }
    // A request that claims to have been forwarded gains nothing by it.
    let response = http
        .post(format!("{}/debug/v1/attach-hook", cluster.url(leader)))
        .header("x-controller-forwarded-by", follower.to_string())
        .json(&serde_json::json!({"tenant_shard_id": shard(2).to_string(), "node_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Replicas name their cluster on what they send each other; a request naming another
    // cluster is refused, even with a good token, before it is answered or forwarded.
    for id in [follower, leader] {
        let read_index = |cluster_id: &str| {
            http.get(format!("{}/v1/cluster/read-index", cluster.url(id)))
                .bearer_auth(keys.token(Scope::ControllerPeer))
                .header("x-controller-cluster", cluster_id.to_owned())
                .send()
        };
        let response = read_index("another-cluster").await.unwrap();
        assert_eq!(response.status(), 403);
        let text = response.text().await.unwrap();
        assert!(text.contains("belongs to cluster"), "{text}");
        let ours = cluster.status_of(id).await.unwrap().cluster_id;
        let response = read_index(&ours).await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        // A joining replica of another cluster (what `serve --join` sends) is not added.
        let response = http
            .post(format!("{}/v1/cluster/members", cluster.url(id)))
            .bearer_auth(keys.token(Scope::ControllerPeer))
            .header("x-controller-cluster", "another-cluster")
            .json(&serde_json::json!({"id": 9, "url": "http://127.0.0.1:9"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        let text = response.text().await.unwrap();
        assert!(text.contains("belongs to cluster"), "{text}");
        let members = cluster.status_of(id).await.unwrap().members;
        assert!(members.iter().all(|m| m.id != 9), "{members:?}");
    }
    // The CLI takes its token from --token-file or the environment, never from argv.
    let cli = |args: &[&str], env_token: Option<String>| {
        let mut command = Command::new(BIN);
        command.args(args).args(["--url", &cluster.url(follower)]);
        command.env_remove(TOKEN_ENV);
        if let Some(token) = env_token {
            command.env(TOKEN_ENV, token);
        }
        command.output().unwrap()
    };
    std::fs::write(keys.path("infra.token"), keys.token(Scope::Infra)).unwrap();
    let token_file = keys.path("infra.token").display().to_string();
    for (args, env_token) in [
        (vec!["nodes"], Some(keys.token(Scope::Admin))),
        (vec!["nodes", "--token-file", &token_file], None),
    ] {
        let output = cli(&args, env_token);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = cli(&["nodes"], None);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing authorization header"));
    let output = cli(
        &["nodes", "--token-from-env", &keys.token(Scope::Admin)],
        None,
    );
    assert!(
        !output.status.success(),
        "a token on the command line is not accepted"
    );
    // Tokens never show up in logs.
    for id in cluster.running() {
        let log = cluster.log_of(id);
        assert!(
            !log.contains(&keys.token(Scope::Admin))
                && !log.contains(&keys.token(Scope::ControllerPeer))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_raft_traffic_is_refused_and_changes_nothing() {
    let keys = Keys::new();
    let args = keys.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = TestCluster::start_secure(3, &args, Some(keys.token(Scope::Admin)), None).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    let status = cluster.status_of(follower).await.unwrap();
    let cluster_id = status.cluster_id.clone();

    // A leader-looking append from "replica `leader`" that would attach a shard.
    let term = status.term + 5;
    let last = status.last_log_index.unwrap();
    let entry = openraft::Entry::<TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, leader), last + 1),
        payload: openraft::EntryPayload::Normal(Proposal {
            commands: vec![DomainCommand::AttachHook {
                shard: shard(77),
                node: Some(NodeId(66)),
                generation_override: None,
            }],
        }),
    };
    let append = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(term, leader),
        prev_log_id: None,
        entries: vec![entry],
        leader_commit: Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(term, leader),
            last + 1,
        )),
    };
    let body = controller_raft::codec::encode(&append).unwrap();
    let http = reqwest::Client::new();
    // Every Raft route checks the token and the cluster before it decodes anything: no
    // token, a client's token, or a peer token of another cluster is refused.
    let refused = [
        (None, cluster_id.as_str()),
        (Some(keys.token(Scope::Admin)), cluster_id.as_str()),
        (Some(keys.token(Scope::GenerationsApi)), cluster_id.as_str()),
        (Some(keys.token(Scope::ControllerPeer)), "another-cluster"),
    ];
    for route in ["append", "vote", "snapshot", "campaign"] {
        let url = format!("{}/raft/v1/{route}", cluster.url(follower));
        for (i, (token, header_cluster)) in refused.iter().enumerate() {
            let mut request = http
                .post(&url)
                .header("x-controller-cluster", *header_cluster)
                .header("x-controller-from", leader.to_string())
                .header("x-controller-to", follower.to_string())
                .body(body.clone());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_eq!(
                status, 403,
                "{route}, case {i}, cluster {header_cluster}: {text}"
            );
        }
    }
    // Refused on its headers, before the body is read: announcing 60 MB and sending
    // none still gets the answer (a replica that read first could be made to hold 64 MiB
    // per connection by anyone).
    for route in ["append", "vote", "snapshot"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = cluster
            .url(follower)
            .trim_start_matches("http://")
            .to_owned();
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /raft/v1/{route} HTTP/1.1\r\nhost: {address}\r\n\
             x-controller-cluster: {cluster_id}\r\nx-controller-from: {leader}\r\n\
             x-controller-to: {follower}\r\ncontent-length: 60000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = [0u8; 12];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{route}: no answer while the body is unsent"))
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 403", "{route}");
    }
    let after = cluster.status_of(follower).await.unwrap();
    assert_eq!(after.term, status.term, "the forged vote changed nothing");
    assert_eq!(
        cluster.client(leader).inspect(shard(77)).await.unwrap(),
        None,
        "nothing was attached"
    );
    assert!(cluster
        .log_of(follower)
        .contains("cannot speak for a replica"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_public_listener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let output = Command::new(BIN)
        .args([
            "serve",
            "--id",
            "1",
            "--listen",
            "0.0.0.0:0",
            "--initial-cluster",
            "1=http://127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("without authentication"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_get_clear_errors() {
    let keys = Keys::new();
    let args = keys.args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--max-body-bytes", "65536", "--max-validate-tenants", "100"]);
    let cluster = TestCluster::start_secure(3, &args, Some(keys.token(Scope::Admin)), None).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    let http = reqwest::Client::new();
    let admin = keys.token(Scope::Admin);
    for id in [leader, follower] {
        let base = cluster.url(id);
        let big = format!(
            r#"{{"tenants": [{}]}}"#,
            vec![r#"{"id": "00000000000000000000000000000000", "gen": 1}"#; 2000].join(",")
        );
        let response = http
            .post(format!("{base}/upcall/v1/validate"))
            .bearer_auth(&admin)
            .body(big)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["msg"].as_str().unwrap().contains("too large")
                || body["msg"].as_str().unwrap().contains("larger than"),
            "{body}"
        );

        // Badly framed (a chunk size that is not hex): the body cannot be read, which
        // is not a matter of its size.
        let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
            .await
            .unwrap();
        let request = format!(
            "POST /upcall/v1/validate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {admin}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400")
                && answer.contains("could not read the request body"),
            "{answer}"
        );

        let many = serde_json::json!({"tenants": (0..101).map(|i| serde_json::json!({"id": shard(i).to_string(), "gen": 1})).collect::<Vec<_>>()});
        let response = http
            .post(format!("{base}/upcall/v1/validate"))
            .bearer_auth(&admin)
            .json(&many)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert!(response.text().await.unwrap().contains("at most 100"));

        for endpoint in endpoints(&cluster, leader)
            .into_iter()
            .filter(|e| e.body.is_some())
        {
            let response = http
                .request(endpoint.method.clone(), format!("{base}{}", endpoint.path))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{\"malformed")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                400,
                "{} {}",
                endpoint.method,
                endpoint.path
            );
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(body["msg"].as_str().unwrap().contains("JSON"), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_between_replicas_and_clients() {
    let keys = Keys::new();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = keys.path("cert.pem");
    let key = keys.path("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut args = keys.args();
    for (flag, path) in [
        ("--tls-cert", &cert),
        ("--tls-key", &key),
        ("--tls-ca", &cert),
    ] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster =
        TestCluster::start_secure(3, &args, Some(keys.token(Scope::Admin)), Some(&cert)).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.other_than(leader);
    assert!(cluster.url(follower).starts_with("https://"));
    let client = cluster.client(follower);
    assert_eq!(
        client
            .attach_hook(shard(5), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        cluster.client(leader).inspect(shard(5)).await.unwrap(),
        Some((1, NodeId(1)))
    );
    // Plain HTTP to a TLS listener gets nowhere.
    let plain = reqwest::Client::new()
        .get(cluster.url(follower).replace("https://", "http://") + "/status")
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

/// Writes `contents` to `path` as a Secret volume or cert-manager does: all at once.
fn replace_file(path: &std::path::Path, contents: &[u8]) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// The value of a series labelled only by `credential` on a replica's /metrics.
async fn credential_metric(
    cluster: &TestCluster,
    id: u64,
    series: &str,
    credential: &str,
) -> Option<i64> {
    let selector = format!("{series}{{credential=\"{credential}\"}}");
    cluster
        .metric(id, &selector)
        .await
        .map(|value| value as i64)
}

const RELOADS: &str = "psc_credential_reloads_total";
const FAILING: &str = "psc_credential_reload_failing";
const NOT_AFTER: &str = "psc_tls_not_after_timestamp_seconds";

/// Midnight UTC at the start of a day, in Unix seconds: when the test certificates expire.
fn midnight(year: i32, month: u8, day: u8) -> i64 {
    rcgen::date_time_ymd(year, month, day).unix_timestamp()
}

/// Sends every running replica SIGHUP, then waits until each reports `value` for a
/// credential series.
async fn reload_everywhere(cluster: &TestCluster, series: &str, credential: &str, value: i64) {
    for id in cluster.running() {
        cluster.hang_up(id);
    }
    wait_for_credential_metric(cluster, series, credential, value).await
}

/// Waits until every running replica reports `value` for a credential series.
async fn wait_for_credential_metric(
    cluster: &TestCluster,
    series: &str,
    credential: &str,
    value: i64,
) {
    wait_for(
        &format!("{series}{{credential=\"{credential}\"}} = {value} on every replica"),
        DEADLINE,
        || async {
            for id in cluster.running() {
                if credential_metric(cluster, id, series, credential).await != Some(value) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
}

/// Two signing keys for a rotation: replicas start with a key directory holding the old
/// one and a peer token it signed, reloaded on SIGHUP only.
struct Rotation {
    old: Keys,
    new: Keys,
    key_dir: PathBuf,
    peer_token: PathBuf,
}

impl Rotation {
    fn new() -> Rotation {
        let old = Keys::new();
        let key_dir = old.path("keys");
        std::fs::create_dir(&key_dir).unwrap();
        std::fs::write(key_dir.join("old.pem"), &old.public).unwrap();
        Rotation {
            peer_token: old.path("peer.token"),
            key_dir,
            old,
            new: Keys::new(),
        }
    }

    /// Three replicas with the old key, an admin token it signed for the test's client.
    async fn start() -> (Rotation, TestCluster) {
        let rotation = Rotation::new();
        let args = [
            "--auth-public-key",
            rotation.key_dir.to_str().unwrap(),
            "--peer-token-file",
            rotation.peer_token.to_str().unwrap(),
            "--reload-interval-ms",
            "0",
        ];
        let token = rotation.old.token(Scope::Admin);
        let cluster = TestCluster::start_secure(3, &args, Some(token), None).await;
        (rotation, cluster)
    }
}

/// An operator rotates the signing key while the cluster serves: the new public key
/// goes in beside the old, every token moves to the new key (the replicas' own peer
/// tokens too), and the old key goes. Each step is a file change and a SIGHUP, never a
/// restart; a key file that does not parse changes nothing. Afterwards every replica,
/// as leader in turn, still commits: its peers accept its new peer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_peer_tokens_rotate_on_sighup_without_a_restart() {
    let (rotation, mut cluster) = Rotation::start().await;
    let Rotation {
        old,
        new,
        key_dir,
        peer_token,
    } = rotation;
    let ids = cluster.running();
    let admin = |id: u64, keys: &Keys| {
        Client::with_http(cluster.url(id), cluster.http())
            .with_token(Some(keys.token(Scope::Admin)))
    };
    for id in &ids {
        assert!(
            admin(*id, &new).cluster_status().await.is_err(),
            "an unknown key is refused"
        );
    }

    // 1. The new key beside the old one.
    std::fs::write(key_dir.join("new.pem"), &new.public).unwrap();
    reload_everywhere(&cluster, RELOADS, "auth_public_key", 1).await;
    for id in &ids {
        admin(*id, &new).cluster_status().await.unwrap();
        admin(*id, &old).cluster_status().await.unwrap();
    }

    // A key file that does not parse: reported, and the keys in use stay.
    std::fs::write(key_dir.join("broken.pem"), "not a key").unwrap();
    reload_everywhere(&cluster, FAILING, "auth_public_key", 1).await;
    for id in &ids {
        admin(*id, &new).cluster_status().await.unwrap();
    }
    std::fs::remove_file(key_dir.join("broken.pem")).unwrap();
    reload_everywhere(&cluster, FAILING, "auth_public_key", 0).await;

    // 2. The replicas' own tokens, signed by the new key.
    replace_file(&peer_token, new.token(Scope::ControllerPeer).as_bytes());
    reload_everywhere(&cluster, RELOADS, "peer_token", 1).await;

    // 3. The old key goes, and the tokens it signed with it.
    std::fs::remove_file(key_dir.join("old.pem")).unwrap();
    reload_everywhere(&cluster, RELOADS, "auth_public_key", 2).await;
    for id in &ids {
        let refused = admin(*id, &old).cluster_status().await.unwrap_err();
        assert_eq!(refused.status(), Some(403), "{refused}");
    }

    // Every replica leads in turn and commits, and a follower's validate (a read round
    // the follower asks the leader for with its own token) answers.
    cluster.use_token(Some(new.token(Scope::Admin)));
    for (round, target) in ids.iter().enumerate() {
        let leader = cluster.wait_for_leader().await;
        if leader != *target {
            let status = cluster
                .client(leader)
                .transfer_leader(*target)
                .await
                .unwrap();
            assert_eq!(status.leader, Some(*target));
            assert_eq!(cluster.wait_for_leader().await, *target);
        }
        let follower = cluster.other_than(*target);
        let generation = cluster
            .client(follower)
            .attach_hook(shard(9), Some(NodeId(1)), None)
            .await
            .unwrap();
        assert_eq!(generation, Some(round as u32 + 1));
        let answer = cluster
            .client(follower)
            .validate(&[(shard(9), round as u32 + 1)])
            .await
            .unwrap();
        assert!(answer.tenants.iter().all(|t| t.valid), "{answer:?}");
    }
}

/// A replica that joins while the cluster has no quorum asks again every second, for
/// as long as it takes; if the signing key rotates meanwhile, it asks with the peer token
/// its file holds now, and is added once the quorum is back (a token read once at start
/// would be refused as soon as the old key went, and end the joining replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_joining_through_a_key_rotation_asks_with_its_new_peer_token() {
    let (keys, mut cluster) = Rotation::start().await;
    cluster.stop(2);
    cluster.stop(3);
    cluster.join(4, 1).await;
    const ASKED: &str = "asking to join again shortly";
    cluster.wait_for_log(4, ASKED, 1).await;

    std::fs::write(keys.key_dir.join("new.pem"), &keys.new.public).unwrap();
    replace_file(
        &keys.peer_token,
        keys.new.token(Scope::ControllerPeer).as_bytes(),
    );
    reload_everywhere(&cluster, RELOADS, "peer_token", 1).await;
    std::fs::remove_file(keys.key_dir.join("old.pem")).unwrap();
    reload_everywhere(&cluster, RELOADS, "auth_public_key", 2).await;
    let asked = cluster.log_of(4).matches(ASKED).count();
    // Two more: the first may have been sent, and checked, before the old key went.
    cluster.wait_for_log(4, ASKED, asked + 2).await;
    assert!(!cluster.has_exited(4), "replica 4 gave up joining");

    cluster.use_token(Some(keys.new.token(Scope::Admin)));
    cluster.restart(2).await;
    cluster.restart(3).await;
    cluster.wait_for_voters(&[1, 2, 3, 4]).await;
    assert!(
        !cluster.log_of(4).contains("refused to add this replica"),
        "{}",
        cluster.log_of(4)
    );
}

/// SIGHUP asks for a reload; a replica with nothing to reload (no keys, no TLS) logs
/// that and keeps serving, rather than dying of the signal's default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_credentials_leaves_the_replica_serving() {
    let mut cluster = TestCluster::start(1).await;
    cluster.hang_up(1);
    cluster
        .wait_for_log(
            1,
            "SIGHUP received: no keys, peer token or TLS files to reload",
            1,
        )
        .await;
    assert!(!cluster.has_exited(1), "SIGHUP ended the replica");
    cluster
        .client(1)
        .attach_hook(shard(3), Some(NodeId(1)), None)
        .await
        .expect("the replica still serves after SIGHUP");
}

/// A new CA that expires as `expires_in` begins, and its certificate in PEM.
fn new_ca(expires_in: i32) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_after = rcgen::date_time_ymd(expires_in, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (rcgen::Issuer::new(params, key), pem)
}

/// A certificate signed by `ca` for loopback that expires on 2090-01-`expires_on`, as
/// (certificate PEM, key PEM, DER).
fn loopback_certificate(
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
    expires_on: u8,
) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params.not_after = rcgen::date_time_ymd(2090, 1, expires_on);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Writes the CA file and a certificate signed by `ca` beside `keys`; returns the CA
/// file, the certificate (DER) and the `serve` arguments for authentication and TLS
/// with credentials reloaded every `reload_ms` (0: on SIGHUP only).
fn with_tls(
    keys: &Keys,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
    ca_pem: &str,
    reload_ms: u64,
) -> (PathBuf, Vec<u8>, Vec<String>) {
    let ca_file = keys.path("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let (cert_pem, key_pem, issued) = loopback_certificate(ca, 1);
    std::fs::write(keys.path("tls.crt"), cert_pem).unwrap();
    std::fs::write(keys.path("tls.key"), key_pem).unwrap();
    let mut args = keys.args();
    for (flag, value) in [
        ("--tls-cert", keys.path("tls.crt")),
        ("--tls-key", keys.path("tls.key")),
        ("--tls-ca", ca_file.clone()),
    ] {
        args.push(flag.into());
        args.push(value.display().to_string());
    }
    args.extend(["--reload-interval-ms".to_owned(), reload_ms.to_string()]);
    (ca_file, issued, args)
}

/// The leaf certificate a replica presents to a new connection now.
async fn presented_certificate(url: &str, ca: &reqwest::Certificate) -> Option<Vec<u8>> {
    let http = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .tls_info(true)
        .build()
        .unwrap();
    let response = http.get(format!("{url}/status")).send().await.ok()?;
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()?
        .peer_certificate()
        .map(<[u8]>::to_vec)
}

/// Gives every replica (they share the files here) a new certificate signed by `ca`
/// that expires on 2090-01-`expires_on`, and waits until each presents it to new
/// connections and reports its expiry.
async fn reissue(
    cluster: &TestCluster,
    keys: &Keys,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
    ca_pem: &str,
    expires_on: u8,
) {
    let (cert_pem, key_pem, issued) = loopback_certificate(ca, expires_on);
    replace_file(&keys.path("tls.key"), key_pem.as_bytes());
    replace_file(&keys.path("tls.crt"), cert_pem.as_bytes());
    let trusted = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    for id in cluster.running() {
        let url = cluster.url(id);
        wait_for(
            &format!("replica {id} to serve its new certificate"),
            DEADLINE,
            || {
                let (url, trusted, issued) = (url.clone(), trusted.clone(), issued.clone());
                async move {
                    (presented_certificate(&url, &trusted).await == Some(issued)).then_some(())
                }
            },
        )
        .await;
    }
    let expiry = midnight(2090, 1, expires_on);
    wait_for_credential_metric(cluster, NOT_AFTER, "tls_certificate", expiry).await;
}

/// Certificates rotate in place, as cert-manager does it: a renewal from the same CA,
/// then a move to a new CA (trust both, re-issue every certificate from the new one,
/// trust only the new one). Every step is a file change taken within the reload
/// interval, without a restart, and afterwards the replicas, which check each other
/// against the CA file, still elect and replicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_the_ca_rotate_without_a_restart() {
    let keys = Keys::new();
    let (old_ca, old_ca_pem) = new_ca(2095);
    let (new_ca, new_ca_pem) = new_ca(2096);
    let (ca_file, first, args) = with_tls(&keys, &old_ca, &old_ca_pem, 200);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster =
        TestCluster::start_secure(3, &args, Some(keys.token(Scope::Admin)), Some(&ca_file)).await;
    let trusted = reqwest::Certificate::from_pem(old_ca_pem.as_bytes()).unwrap();
    for id in cluster.running() {
        assert_eq!(
            presented_certificate(&cluster.url(id), &trusted).await,
            Some(first.clone())
        );
    }
    // Each replica says when the chain it serves expires (the alerts read it).
    wait_for_credential_metric(&cluster, NOT_AFTER, "tls_certificate", midnight(2090, 1, 1)).await;

    // A renewal from the same CA.
    reissue(&cluster, &keys, &old_ca, &old_ca_pem, 2).await;
    wait_for_credential_metric(&cluster, FAILING, "tls_certificate", 0).await;

    // A CA file without a certificate is reported and changes nothing.
    replace_file(&ca_file, b"not a certificate");
    wait_for_credential_metric(&cluster, FAILING, "tls_ca", 1).await;
    replace_file(&ca_file, old_ca_pem.as_bytes());
    wait_for_credential_metric(&cluster, FAILING, "tls_ca", 0).await;

    // A new CA: trusted beside the old one, then every certificate from it, then alone.
    replace_file(&ca_file, format!("{old_ca_pem}{new_ca_pem}").as_bytes());
    wait_for_credential_metric(&cluster, RELOADS, "tls_ca", 1).await;
    reissue(&cluster, &keys, &new_ca, &new_ca_pem, 3).await;
    replace_file(&ca_file, new_ca_pem.as_bytes());
    wait_for_credential_metric(&cluster, RELOADS, "tls_ca", 2).await;
    cluster.trust(Some(&ca_file));

    // Connections made before stay up (they were checked when made), so restart a
    // follower: the leader must reach it over a new connection, checked against the new
    // CA alone, for it to catch up with a write made through another follower.
    let leader = cluster.wait_for_leader().await;
    let restarted = cluster.other_than(leader);
    cluster.kill(restarted);
    cluster.restart(restarted).await;
    let writer = *cluster
        .others_than(leader)
        .iter()
        .find(|id| **id != restarted)
        .unwrap();
    assert_eq!(
        cluster
            .client(writer)
            .attach_hook(shard(6), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(1)
    );
    let committed = cluster.status_of(leader).await.unwrap().committed_index;
    wait_for(
        &format!("replica {restarted} to catch up"),
        DEADLINE,
        || async {
            let applied = cluster.status_of(restarted).await?.applied_index;
            (applied >= committed).then_some(())
        },
    )
    .await;
    // And it can lead: its votes and appends go out on its own client.
    let moved = cluster
        .client(leader)
        .transfer_leader(restarted)
        .await
        .unwrap();
    assert_eq!(moved.leader, Some(restarted));
}

/// A StatefulSet pod with an empty data dir waits, before Raft starts, until it sees its
/// peers; that may take hours. SIGHUP there reloads its certificate as it would on a
/// serving replica (it used to end the process), and the pod goes on to form the
/// cluster when its peers come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waiting_for_its_peers_takes_sighup_as_a_reload() {
    let keys = Keys::new();
    let (ca, ca_pem) = new_ca(2095);
    let (ca_file, first, args) = with_tls(&keys, &ca, &ca_pem, 0);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::pods(3, &args, Some(keys.token(Scope::Admin)), Some(&ca_file));
    let trusted = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();

    cluster.launch(1);
    cluster.wait_answering(1).await;
    assert_eq!(
        presented_certificate(&cluster.url(1), &trusted).await,
        Some(first)
    );
    assert_eq!(
        cluster.client(1).cluster_status().await.unwrap().state,
        "starting",
        "the pod should be waiting for its peers"
    );
    // Its answer names the cluster and the peers it saw: for peers and admins only.
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(trusted.clone())
        .build()
        .unwrap();
    let response = anonymous
        .get(format!("{}/v1/cluster", cluster.url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let (cert_pem, key_pem, renewed) = loopback_certificate(&ca, 2);
    replace_file(&keys.path("tls.crt"), cert_pem.as_bytes());
    replace_file(&keys.path("tls.key"), key_pem.as_bytes());
    cluster.hang_up(1);
    wait_for(
        "the waiting pod to present the renewed certificate",
        DEADLINE,
        || async {
            (presented_certificate(&cluster.url(1), &trusted).await == Some(renewed.clone()))
                .then_some(())
        },
    )
    .await;
    assert!(!cluster.has_exited(1), "SIGHUP ended the waiting pod");

    cluster.launch(2);
    cluster.launch(3);
    cluster.wait_for_leader().await;
    assert_eq!(
        cluster
            .client(1)
            .attach_hook(shard(1), Some(NodeId(1)), None)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        presented_certificate(&cluster.url(1), &trusted).await,
        Some(renewed),
        "the replica serves with the certificate its files hold"
    );
    // and reports the expiry of that one, loaded before its metrics existed.
    wait_for_credential_metric(&cluster, NOT_AFTER, "tls_certificate", midnight(2090, 1, 2)).await;
}
