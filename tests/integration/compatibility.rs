//! A data dir written by an earlier version opens in this one.
//!
//! `tests/fixtures/datadir-format-1/` holds a one-replica data dir written by the first
//! release of storage format 1 (a snapshot, a purged log prefix, and log entries after
//! the snapshot that must be replayed), with the tenants and nodes it held. Keep the
//! fixture when the format changes: add one for the new format, and keep this test
//! passing on the old one (or make the refusal explicit, with a message).

use std::process::{Child, Command, Stdio};

use pageserver_controller::api::types::{NodeDescribeResponse, TenantShardDescribe};
use pageserver_controller::client::Client;

use crate::support::{free_port, wait_ready, BIN};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/datadir-format-1"
);

struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_data_dir_opens_with_all_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .args(["xzf", &format!("{FIXTURE}/replica-1.tar.gz"), "-C"])
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(status.success());
    let port = free_port();
    let _replica = Replica(
        Command::new(BIN)
            .args([
                "serve",
                "--id",
                "1",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--data-dir")
            .arg(dir.path().join("replica-1"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::new(format!("http://127.0.0.1:{port}"));
    wait_ready(&client).await;

    let expected: Vec<TenantShardDescribe> =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURE}/tenants.json")).unwrap()).unwrap();
    assert_eq!(client.list_tenants(None, None).await.unwrap(), expected);
    let nodes: Vec<NodeDescribeResponse> =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURE}/nodes.json")).unwrap()).unwrap();
    assert_eq!(client.list_nodes().await.unwrap(), nodes);
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.cluster_id, "63caaada70bc3c7e");
    assert!(
        status.snapshot_index.is_some() && status.applied_index >= Some(33),
        "{status:?}"
    );

    // And it keeps working: the next generation follows the stored one.
    let first = expected[0].tenant_shard_id;
    let next = client
        .attach_hook(first, expected[0].node_id, None)
        .await
        .unwrap();
    assert_eq!(next, expected[0].generation.map(|g| g + 1));
}
