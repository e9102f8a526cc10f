//! The scratch image as a three-replica cluster of Docker containers shaped like
//! StatefulSet pods (see `deploy_tests::docker`), under pageserver-shaped traffic, through
//! what a Kubernetes deployment lives through: a leader's node dies, a pod is cut off
//! from the network, the image is rolled one pod at a time, a pod loses its volume, and
//! the cluster is scaled to five and back. After every step the history must satisfy the
//! generation rules and no client call may have failed after its retries.
//!
//! The replicas run the `serve` arguments of `deploy/compose.yaml`, with the StatefulSet's
//! authentication flags instead of `--insecure-no-auth`, and the key and token mounted
//! the way a Kubernetes Secret volume lays them out.
//!
//! Needs a running Docker engine; it fails (never skips) without one. It builds the
//! image with `deploy/build-image.sh --profile image-test` (target/static, incremental).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chaos::history::{write_jsonl, History, Op};
use deploy_tests::docker::{build_image, docker, pre_stop_hook, require_docker, ContainerCluster};
use deploy_tests::traffic::{Config, Endpoints, Traffic};
use pageserver_controller::auth::{generate_key_pair, mint, Scope};

const WAIT: Duration = Duration::from_secs(90);
const DATA: &str = "/etc/pageserver-controller";

/// Lays out `files` under `dir` as the kubelet projects a Secret: each file is a symlink
/// to `..data/NAME`, `..data` a symlink to a hidden timestamped directory.
fn secret_volume(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let stamped = dir.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&stamped)?;
    for (name, content) in files {
        let file = stamped.join(name);
        std::fs::write(&file, content)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        symlink(format!("..data/{name}"), dir.join(name))?;
    }
    symlink(stamped.file_name().expect("a name"), dir.join("..data"))?;
    for d in [dir, &stamped] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The step log: what ran and how long it took.
struct Steps {
    started: Instant,
    current: (String, Instant),
    done: Vec<(String, Duration)>,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            started: Instant::now(),
            current: ("setup".into(), Instant::now()),
            done: Vec::new(),
        }
    }

    fn next(&mut self, name: &str) {
        let (previous, since) = std::mem::replace(&mut self.current, (name.into(), Instant::now()));
        eprintln!(
            "[docker test] {previous}: {:.1?}; now: {name}",
            since.elapsed()
        );
        self.done.push((previous, since.elapsed()));
    }
}

/// The rules, checked on everything recorded so far.
fn assert_rules(step: &str, history: &History, traffic: &Traffic) {
    let failures = traffic.failures();
    assert!(
        failures.is_empty(),
        "after {step}: client calls failed after their retries: {failures:#?}"
    );
    let violations = check(&history.ops());
    assert!(
        violations.is_empty(),
        "after {step}: the generation rules are broken: {violations:#?}"
    );
}

/// The chaos checker's verdict as a list of problems (empty: the history is correct).
fn check(ops: &[Op]) -> Vec<String> {
    let verdict = chaos::checker::check(ops);
    verdict
        .violations
        .iter()
        .map(ToString::to_string)
        .chain(
            verdict
                .inconclusive
                .iter()
                .map(|shard| format!("shard {shard}: the check ran out of budget")),
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scratch_image_cluster_survives_leader_kill_partition_rolling_update_disk_loss_and_scaling()
{
    require_docker();
    let mut steps = Steps::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .subsec_nanos();
    let run = format!("psc-deploy-test-{}-{nanos:x}", std::process::id());

    // Keys and tokens, mounted like the StatefulSet's two Secrets.
    let secrets = tempfile::Builder::new()
        .prefix("psc-deploy-secrets-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let (private, public) = generate_key_pair().expect("a key pair");
    let peer_token =
        mint(private.as_bytes(), Scope::ControllerPeer, None, None).expect("a peer token");
    let admin_token = mint(private.as_bytes(), Scope::Admin, None, None).expect("an admin token");
    secret_volume(&secrets.join("jwt"), &[("auth_public_key.pem", &public)]).expect("key volume");
    secret_volume(&secrets.join("peer-token"), &[("token", &peer_token)]).expect("token volume");
    std::fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");

    // The compose file's replica, with authentication as in deploy/kubernetes.
    let compose = deploy_tests::compose::services().expect("reading deploy/compose.yaml");
    let mut args: Vec<String> = compose["psc-0"]
        .command
        .iter()
        .filter(|a| *a != "--insecure-no-auth")
        .cloned()
        .collect();
    assert_eq!(
        args.len() + 1,
        compose["psc-0"].command.len(),
        "compose.yaml's replicas run with --insecure-no-auth"
    );
    args.push(format!("--auth-public-key={DATA}/jwt"));
    args.push(format!("--peer-token-file={DATA}/peer-token/token"));
    let mount = vec![
        "--volume".to_owned(),
        format!("{}:{DATA}:ro", secrets.display()),
    ];
    let mut cluster = ContainerCluster::new(&run, args, mount)
        .await
        .expect("a network");
    cluster.dirs.push(secrets);
    cluster.token = Some(admin_token.clone());

    // The image, and a second one for the rolling update (same binary, new image id).
    let image = format!("{run}:a");
    let rolled = format!("{run}:b");
    cluster.images = vec![image.clone(), rolled.clone()];
    build_image(&image).await.expect("building the image");
    let dockerfile = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dockerfile.path().join("Dockerfile"),
        format!("FROM {image}\nLABEL psc.deploy-test.rollout=b\n"),
    )
    .expect("a Dockerfile");
    docker(vec![
        "build".into(),
        "--quiet".into(),
        "--tag".into(),
        rolled.clone(),
        dockerfile.path().display().to_string(),
    ])
    .await
    .expect("building the second image");
    let user = docker(vec![
        "image".into(),
        "inspect".into(),
        "--format".into(),
        "{{.Config.User}}".into(),
        image.clone(),
    ])
    .await
    .expect("inspecting the image");
    assert_eq!(
        user.trim(),
        "65532:65532",
        "the image runs as the unprivileged user"
    );

    steps.next("bootstrap three pods");
    for ordinal in 0..3 {
        cluster.run(ordinal, &image).await.expect("starting a pod");
    }
    for ordinal in 0..3 {
        cluster
            .wait_ready(ordinal, WAIT)
            .await
            .expect("pods ready after bootstrap");
    }
    cluster
        .wait_for_voters(&[0, 1, 2], &[1, 2, 3], WAIT)
        .await
        .expect("three voters");

    // What README tells an operator to run in a pod: every member's own view, reached at
    // the peer addresses (hostnames), with the peer token the pod already mounts.
    let report = docker(vec![
        "exec".into(),
        cluster.pod(0).container.clone(),
        "/usr/local/bin/pageserver-controller".into(),
        "cluster".into(),
        "status".into(),
        "--all".into(),
        format!("--token-file={DATA}/peer-token/token"),
    ])
    .await
    .expect("cluster status --all inside a pod");
    assert!(
        report.contains("all 3 members see leader") && !report.contains("unreachable"),
        "{report}"
    );

    let history = History::new();
    let endpoints = Endpoints::default();
    endpoints.set(cluster.endpoints(0..3));
    let traffic = Traffic::start(
        endpoints.clone(),
        history.clone(),
        Config {
            clients: 3,
            own_shards: 2,
            shared_shards: 2,
            retry_deadline: Duration::from_secs(60),
            pause: Duration::from_millis(20),
            token: Some(admin_token.clone()),
        },
    );
    traffic
        .wait_for_progress(20, WAIT)
        .await
        .expect("traffic flows");
    assert_rules("bootstrap", &history, &traffic);

    steps.next("kill the leader's container, restart it on its volume");
    lose_the_leader(&cluster, &traffic, Outage::Killed).await;
    assert_rules("the leader kill", &history, &traffic);

    steps.next("disconnect the leader from the network, reconnect it");
    lose_the_leader(&cluster, &traffic, Outage::Disconnected).await;
    assert_rules("the disconnection", &history, &traffic);

    steps.next("rolling update to a new image, highest ordinal first");
    let rolled_id = docker(vec![
        "image".into(),
        "inspect".into(),
        "--format".into(),
        "{{.Id}}".into(),
        rolled.clone(),
    ])
    .await
    .expect("the new image's id");
    // Each pod stopped as the kubelet stops it: the StatefulSet's preStop hook, which
    // hands leadership away if the pod leads, then SIGTERM.
    let hook = pre_stop_hook().expect("the StatefulSet's preStop hook");
    let mut stepped_down = 0;
    for ordinal in [2, 1, 0] {
        let id = cluster.pod(ordinal).id();
        let said = cluster
            .pre_stop(ordinal, &hook)
            .await
            .expect("the preStop hook succeeds");
        if said.contains("stepped down") {
            stepped_down += 1;
            let leader = cluster
                .leader_of_the_others(ordinal, WAIT)
                .await
                .expect("the other two agree on a leader");
            assert_ne!(
                leader, id,
                "pod {ordinal} still leads after its preStop hook: {said}"
            );
        } else {
            assert!(
                said.contains("does not lead"),
                "pod {ordinal}'s preStop hook: {said}"
            );
        }
        cluster
            .stop(ordinal)
            .await
            .expect("a clean exit on SIGTERM");
        cluster.remove_container(ordinal).await.expect("docker rm");
        cluster
            .run(ordinal, &rolled)
            .await
            .expect("the pod on the new image");
        back_among_three(&cluster, &traffic, ordinal, "the pod on the new image").await;
        assert_eq!(
            cluster.image_id_of(ordinal).await.expect("inspect"),
            rolled_id.trim()
        );
    }
    // The leader when the roll began was rolled too (only a stopping leader moves
    // leadership), so one hook at least had leadership to hand away.
    assert!(stepped_down >= 1, "no pod led when its preStop hook ran");
    assert_rules("the rolling update", &history, &traffic);

    steps.next("a pod loses its volume: it leaves the cluster, then joins again");
    let lost = 1u32;
    cluster.stop(lost).await.expect("stopping the pod");
    cluster.remove_container(lost).await.expect("docker rm");
    cluster.wipe_volume(lost).await.expect("an empty volume");
    cluster
        .run(lost, &rolled)
        .await
        .expect("the pod on an empty volume");
    cluster
        .wait_for("the pod to leave before it joins", WAIT, || {
            let left = cluster
                .logs(lost, 200)
                .contains("Asking the cluster to remove it");
            async move { left.then_some(()) }
        })
        .await
        .expect("the pod never votes with an empty log: it leaves first");
    back_among_three(&cluster, &traffic, lost, "the pod on an empty volume").await;
    assert_rules("the lost volume", &history, &traffic);

    steps.next("scale to five: pods 3 and 4 join by themselves");
    for ordinal in [3, 4] {
        cluster.run(ordinal, &rolled).await.expect("a new pod");
    }
    for ordinal in [3, 4] {
        cluster
            .wait_ready(ordinal, WAIT)
            .await
            .expect("the new pod is ready");
    }
    cluster
        .wait_for_voters(&[0, 1, 2, 3, 4], &[1, 2, 3, 4, 5], WAIT)
        .await
        .expect("five voters");
    endpoints.set(cluster.endpoints(0..5));
    traffic
        .wait_for_progress(20, WAIT)
        .await
        .expect("traffic flows through five");
    assert_rules("the scale-up", &history, &traffic);

    // Two pods joining at once can make one exit ("another membership change is in
    // progress", tests/integration/concurrent_joins.rs); like the kubelet, Docker starts
    // it again and it joins. Say so when it happened.
    for ordinal in [3, 4] {
        let restarts = cluster.restarts(ordinal).await.expect("docker inspect");
        if restarts > 0 {
            eprintln!("[docker test] pod {ordinal} was restarted {restarts} time(s) while joining");
        }
    }

    steps.next("scale back to three: remove members 5 and 4, then the pods and their volumes");
    endpoints.set(cluster.endpoints(0..3));
    for id in [5, 4] {
        deploy_tests_remove(&cluster, 0, id).await;
    }
    cluster
        .wait_for_voters(&[0, 1, 2], &[1, 2, 3], WAIT)
        .await
        .expect("three voters");
    for ordinal in [4, 3] {
        cluster
            .stop(ordinal)
            .await
            .expect("a removed replica stops cleanly");
        cluster
            .delete(ordinal)
            .await
            .expect("pod and volume deleted");
    }
    traffic
        .wait_for_progress(20, WAIT)
        .await
        .expect("traffic flows through three");
    assert_rules("the scale-down", &history, &traffic);

    steps.next("final reads");
    let failures = traffic.stop().await;
    assert!(
        failures.is_empty(),
        "client calls failed after their retries: {failures:#?}"
    );
    let ops = history.ops();
    let violations = check(&ops);
    if !violations.is_empty() {
        let path = std::env::temp_dir().join(format!("{run}-history.jsonl"));
        write_jsonl(&ops, &path).expect("writing the history");
        panic!(
            "the generation rules are broken (history in {}): {violations:#?}",
            path.display()
        );
    }
    steps.next("clean-up");
    let total = steps.started.elapsed();
    drop(cluster);
    eprintln!(
        "[docker test] {} operations checked; steps: {:?}; total {:.0?} (+ clean-up)",
        ops.len(),
        steps
            .done
            .iter()
            .map(|(n, d)| format!("{n}: {d:.0?}"))
            .collect::<Vec<_>>(),
        total
    );
}

/// How a test takes the leader's pod out of the cluster, and gives it back.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `docker kill` (SIGKILL), then `docker start` on the same volume.
    Killed,
    /// `docker network disconnect`, then connect again.
    Disconnected,
}

/// Takes the leader of pods 0..3 out with `outage`: the other two elect a leader of their
/// own and serve traffic, and after the pod is given back all three are voters again.
async fn lose_the_leader(cluster: &ContainerCluster, traffic: &Traffic, outage: Outage) {
    let leader = cluster
        .wait_for_voters(&[0, 1, 2], &[1, 2, 3], WAIT)
        .await
        .expect("a leader");
    let victim = (leader - 1) as u32;
    match outage {
        Outage::Killed => cluster.kill(victim).await.expect("docker kill"),
        Outage::Disconnected => cluster
            .disconnect(victim)
            .await
            .expect("docker network disconnect"),
    }
    let new_leader = cluster
        .leader_of_the_others(victim, WAIT)
        .await
        .expect("a leader among the others");
    assert_ne!(
        new_leader, leader,
        "{outage:?}: the other two elect a leader of their own"
    );
    traffic
        .wait_for_progress(20, WAIT)
        .await
        .expect("traffic flows without the old leader");
    match outage {
        Outage::Killed => cluster.start(victim).await.expect("docker start"),
        Outage::Disconnected => cluster
            .connect(victim)
            .await
            .expect("docker network connect"),
    }
    back_among_three(cluster, traffic, victim, "the pod given back").await;
}

/// Pod `ordinal` is ready (it caught up), pods 0..3 are the three voters, and traffic
/// makes progress through them.
async fn back_among_three(cluster: &ContainerCluster, traffic: &Traffic, ordinal: u32, what: &str) {
    cluster
        .wait_ready(ordinal, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{what} is ready: {e:#}"));
    cluster
        .wait_for_voters(&[0, 1, 2], &[1, 2, 3], WAIT)
        .await
        .unwrap_or_else(|e| panic!("{what}: three voters again: {e:#}"));
    traffic
        .wait_for_progress(10, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{what}: traffic flows: {e:#}"));
}

/// `cluster remove --id ID` through pod `via`, as an operator would (retrying a 5xx, as
/// the removal may meet an election).
async fn deploy_tests_remove(cluster: &ContainerCluster, via: u32, id: u64) {
    let client = cluster.client(via);
    pageserver_controller::client::retry(
        WAIT,
        Duration::from_millis(200),
        Duration::from_secs(2),
        || {
            let client = client.clone();
            async move { client.remove_member(id, false).await }
        },
    )
    .await
    .with_context(|| format!("removing replica {id}"))
    .expect("the removal is accepted");
}
