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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::Refusal;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/log-entries-format-1.txt"
    );

    /// The fixture's entries: (line number, payload bytes, recorded answer).
    fn entries() -> Vec<(usize, Vec<u8>, Applied)> {
        let text = std::fs::read_to_string(FIXTURE).expect("reading the fixture");
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.starts_with('#') && !line.trim().is_empty())
            .map(|(i, line)| {
                let (hex, json) = line
                    .split_once('\t')
                    .unwrap_or_else(|| panic!("line {}: no tab", i + 1));
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
                    .collect();
                let applied =
                    serde_json::from_str(json).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
                (i + 1, bytes, applied)
            })
            .collect()
    }

    /// Entries written by the first release of the format still decode to the same
    /// commands (re-encoding gives the same bytes: no variant was inserted or reordered,
    /// no field added) and applying them in order still answers what it answered then.
    #[test]
    fn log_entries_of_format_1_decode_and_apply_as_they_always_did() {
        let mut registry = Registry::default();
        let mut seen = BTreeSet::new();
        for (line, bytes, recorded) in entries() {
            let proposal: Proposal = controller_raft::codec::decode(&bytes)
                .unwrap_or_else(|e| panic!("line {line} no longer decodes: {e}"));
            assert_eq!(
                controller_raft::codec::encode(&proposal).unwrap(),
                bytes,
                "line {line} encodes differently now: {proposal:?}"
            );
            let applied = ReplicatedState::<TypeConfig>::apply(&mut registry, &proposal);
            assert_eq!(
                applied, recorded,
                "line {line} ({proposal:?}) answers differently now"
            );
            seen.extend(proposal.commands.iter().map(command_kind));
            seen.extend(applied.outcomes.iter().map(outcome_kind));
        }
        // Every command, outcome and refusal a command can meet is pinned by some line.
        let all = [
            "AttachHook",
            "ReAttach",
            "RegisterNode",
            "Migrate",
            "ConfigureNode",
            "DeleteNode",
            "Attached",
            "ReAttached",
            "NodeRegistered",
            "Migrated",
            "NodeConfigured",
            "NodeDeleted",
            "NodeConflict",
            "UnknownNode",
            "UnknownShard",
            "GenerationExhausted",
            "NodeInUse",
        ];
        let missing: Vec<&&str> = all.iter().filter(|k| !seen.contains(**k)).collect();
        assert!(
            missing.is_empty(),
            "no line of the fixture shows {missing:?}"
        );
    }

    // No wildcard arms: a new variant does not compile until it is named here, and then
    // the test asks for a fixture line that shows it.
    fn command_kind(command: &Command) -> &'static str {
        match command {
            Command::AttachHook { .. } => "AttachHook",
            Command::ReAttach { .. } => "ReAttach",
            Command::RegisterNode { .. } => "RegisterNode",
            Command::Migrate { .. } => "Migrate",
            Command::ConfigureNode { .. } => "ConfigureNode",
            Command::DeleteNode { .. } => "DeleteNode",
        }
    }

    fn outcome_kind(outcome: &Outcome) -> &'static str {
        match outcome {
            Outcome::Attached { .. } => "Attached",
            Outcome::ReAttached { .. } => "ReAttached",
            Outcome::NodeRegistered => "NodeRegistered",
            Outcome::Migrated { .. } => "Migrated",
            Outcome::NodeConfigured => "NodeConfigured",
            Outcome::NodeDeleted => "NodeDeleted",
            Outcome::Refused(refusal) => match refusal {
                Refusal::NodeConflict { .. } => "NodeConflict",
                Refusal::UnknownNode(_) => "UnknownNode",
                Refusal::UnknownShard(_) => "UnknownShard",
                Refusal::GenerationExhausted(_) => "GenerationExhausted",
                // Only a restore's bump meets it, never a log entry.
                Refusal::FloorExhausted => "FloorExhausted",
                Refusal::NodeInUse { .. } => "NodeInUse",
            },
        }
    }
}
