//! The glue between the generation registry and openraft: what a log entry carries, what
//! applying it answers, and the type configuration tying them to our storage and members.
//!
//! A log entry carries a [`Proposal`]: one or more domain commands applied in order as one
//! unit. Batching concurrent commands into one entry is what lets many attaches share one
//! Raft round and one fsync; applying them one by one in order keeps the answers exactly
//! what separate entries would have produced.

use controller_raft::Member;
use controller_storage::ReplicatedState;
use serde::{Deserialize, Serialize};

use crate::domain::{Command, FrozenRegistry, Outcome, Registry};

/// A log entry's payload: commands applied in order, atomically with the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub commands: Vec<Command>,
}

/// What applying a [`Proposal`] answered: one outcome per command, in order. Blank and
/// membership entries answer nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub outcomes: Vec<Outcome>,
}

openraft::declare_raft_types!(
    /// The Raft types of a pageserver-controller replica.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
);

impl ReplicatedState<TypeConfig> for Registry {
    fn apply(&mut self, proposal: &Proposal) -> Applied {
        Applied {
            outcomes: proposal
                .commands
                .iter()
                .map(|command| Registry::apply(self, command))
                .collect(),
        }
    }

    type Frozen = FrozenRegistry;

    fn freeze(&self) -> FrozenRegistry {
        self.frozen()
    }
}

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogStore = controller_storage::LogStore<TypeConfig>;
pub type StateMachine = controller_storage::StateMachineStore<TypeConfig, Registry>;
pub type SharedState = controller_storage::SharedState<Registry>;
