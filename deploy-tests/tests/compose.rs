//! `deploy/compose.yaml` run as a laptop user runs it: `docker compose up` on the scratch
//! image, nothing added but the image name and free loopback ports. The other Docker
//! test (`tests/docker.rs`) reuses the compose file's `serve` arguments with containers
//! it starts itself; this one proves that the file as written brings up a cluster, that
//! its published ports answer, that `docker compose stop` of the leader is a clean
//! handoff, and that the named volumes keep every generation across `down` and `up`.
//!
//! Needs a running Docker engine with Compose; it fails (never skips) without them.

use std::time::Duration;

use deploy_tests::compose::Project;
use deploy_tests::docker::{build_image, require_docker};
use deploy_tests::settled::wait_until_settled;
use deploy_tests::traffic::shard;
use pageserver_controller::api::types::NodeRegisterRequest;
use pageserver_controller::client::{retry, Client};
use pageserver_controller::domain::NodeId;

const WAIT: Duration = Duration::from_secs(90);

/// Like a pageserver: retries everything but a refusal for up to [`WAIT`].
async fn patiently<T, F, Fut>(what: &str, call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = pageserver_controller::client::Result<T>>,
{
    retry(
        WAIT,
        Duration::from_millis(100),
        Duration::from_secs(1),
        call,
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Waits until all `clients` (psc-0, psc-1, psc-2: replicas 1, 2, 3) are ready and agree
/// on one leader among the three voters; the leader's replica id.
async fn wait_for_cluster(clients: &[Client]) -> u64 {
    let client_of = |id: u64| {
        clients
            .get(usize::try_from(id.checked_sub(1)?).ok()?)
            .cloned()
    };
    wait_until_settled(clients, &[1, 2, 3], client_of, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the compose cluster did not settle: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_file_starts_a_cluster_that_hands_off_on_stop_and_keeps_generations_on_its_volumes()
{
    require_docker();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .subsec_nanos();
    let run = format!("psc-compose-test-{}-{nanos:x}", std::process::id());
    let image = format!("{run}:dev");
    build_image(&image).await.expect("building the image");

    let ports: Vec<u16> = (0..3)
        .map(|_| pageserver_controller::loopback::free_port().expect("a free port"))
        .collect();
    let mut env = vec![("PSC_IMAGE".to_owned(), image.clone())];
    env.extend(
        ports
            .iter()
            .enumerate()
            .map(|(n, port)| (format!("PSC_PORT_{n}"), port.to_string())),
    );
    let mut project = Project::new(&run, env);
    project.images.push(image);
    let clients: Vec<Client> = ports
        .iter()
        .map(|port| {
            Client::new(format!("http://127.0.0.1:{port}")).with_timeout(Duration::from_secs(10))
        })
        .collect();
    // Service psc-N is replica N+1 (its host name), reached on PSC_PORT_N.
    let client_of = |id: u64| clients[usize::try_from(id - 1).expect("small")].clone();
    let service_of = |id: u64| format!("psc-{}", id - 1);

    project.run(&["up", "--detach"]).await.expect("compose up");
    let leader = wait_for_cluster(&clients).await;
    for (n, client) in clients.iter().enumerate() {
        let view = client.cluster_status().await.expect("cluster status");
        assert_eq!(
            view.replica_id,
            n as u64 + 1,
            "psc-{n}'s id comes from its host name"
        );
    }

    // Writes and reads through every published port.
    let node = NodeId(1);
    let registration = NodeRegisterRequest {
        node_id: node,
        listen_pg_addr: "ps-1".into(),
        listen_pg_port: 6400,
        listen_http_addr: "ps-1".into(),
        listen_http_port: 9898,
        availability_zone_id: None,
    };
    patiently("registering a pageserver", || {
        clients[1].register_node(&registration)
    })
    .await;
    let tenant = shard(1, 0);
    let first = patiently("attaching", || {
        clients[2].attach_hook(tenant, Some(node), None)
    })
    .await
    .expect("a generation");
    let batch = [(tenant, first)];
    for client in &clients {
        let answer = patiently("validating", || client.validate(&batch)).await;
        assert!(
            answer.tenants.len() == 1 && answer.tenants[0].valid,
            "{} calls the latest generation {first} invalid: {answer:?}",
            client.base_url()
        );
    }

    // `docker compose stop` of the leader: SIGTERM, handoff, clean exit; the others go on.
    let leader_service = service_of(leader);
    project
        .run(&["stop", "--timeout", "30", &leader_service])
        .await
        .expect("compose stop");
    assert_eq!(
        project.exit_code(&leader_service).await.expect("exit code"),
        0,
        "the leader exits cleanly on SIGTERM"
    );
    let survivor = client_of(if leader == 1 { 2 } else { 1 });
    let second = patiently("attaching with the old leader stopped", || {
        survivor.attach_hook(tenant, Some(node), None)
    })
    .await
    .expect("a generation");
    assert!(second > first, "generation {second} after {first}");
    let answer = patiently("validating", || survivor.validate(&batch)).await;
    assert!(
        !answer.tenants[0].valid,
        "{first} was superseded by {second} yet is valid: {answer:?}"
    );
    project
        .run(&["start", &leader_service])
        .await
        .expect("compose start");
    wait_for_cluster(&clients).await;

    // `down` removes the containers, not the volumes: `up` again finds every generation.
    project
        .run(&["down", "--timeout", "30"])
        .await
        .expect("compose down");
    project
        .run(&["up", "--detach"])
        .await
        .expect("compose up again");
    wait_for_cluster(&clients).await;
    for client in &clients {
        let seen = patiently("inspecting", || client.inspect(tenant)).await;
        assert_eq!(
            seen,
            Some((second, node)),
            "{} after down and up",
            client.base_url()
        );
    }
    let third = patiently("attaching after down and up", || {
        clients[0].attach_hook(tenant, Some(node), None)
    })
    .await
    .expect("a generation");
    assert!(third > second, "generation {third} after {second}");
}
