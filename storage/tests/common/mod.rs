//! A minimal application for storage tests: a counter that adds.
#![allow(dead_code)]

use controller_raft::Member;
use controller_storage::{ReplicatedState, StateMachineStore};
use openraft::Entry;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Add(pub u64);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sum(pub u64);

openraft::declare_raft_types!(
    pub Config:
        D = Add,
        R = Sum,
        NodeId = u64,
        Node = Member,
        Entry = Entry<Config>,
        SnapshotData = tokio::fs::File,
);

#[derive(Default, Serialize, Deserialize)]
pub struct Counter(pub u64);

impl ReplicatedState<Config> for Counter {
    fn apply(&mut self, command: &Add) -> Sum {
        self.0 += command.0;
        Sum(self.0)
    }

    type Frozen = Counter;

    fn freeze(&self) -> Counter {
        Counter(self.0)
    }
}

pub type Sm = StateMachineStore<Config, Counter>;
