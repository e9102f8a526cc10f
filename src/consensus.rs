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

    use openraft::EntryPayload;
    use serde_json::{json, Value};

    use super::*;
    use crate::domain::Refusal;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/log-entries-format-1.txt"
    );

    type Entry = openraft::Entry<TypeConfig>;

    /// One line of the fixture.
    enum Line {
        /// A log entry's bytes, what applying it answered, the registry afterwards.
        Entry(Vec<u8>, Value, Value),
        /// A restore's (or recovery's) bump between entries, and the registry afterwards.
        Bump(u32, Value),
        /// The registry's encoding in snapshots and backups, and the registry it holds.
        Snapshot(Vec<u8>, Value),
    }

    fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn lines() -> Vec<(usize, Line)> {
        let text = std::fs::read_to_string(FIXTURE).expect("reading the fixture");
        let json = |at: usize, text: &str| -> Value {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("line {at}: {e}"))
        };
        text.lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line))
            .filter(|(_, line)| !line.starts_with('#') && !line.trim().is_empty())
            .map(|(at, line)| {
                let columns: Vec<&str> = line.split('\t').collect();
                let parsed = match columns[..] {
                    ["bump", by, state] => Line::Bump(by.parse().expect("a bump"), json(at, state)),
                    ["snapshot", hex, state] => Line::Snapshot(bytes(hex), json(at, state)),
                    [hex, answer, state] => {
                        Line::Entry(bytes(hex), json(at, answer), json(at, state))
                    }
                    _ => panic!("line {at}: expected three tab-separated columns"),
                };
                (at, parsed)
            })
            .collect()
    }

    /// What an entry does, in the fixture's notation: a normal entry's answers, a
    /// membership entry's configuration; a blank entry does nothing. Adds the kinds of
    /// payload, commands and outcomes met to `seen`.
    fn answer(entry: &Entry, registry: &mut Registry, seen: &mut BTreeSet<&'static str>) -> Value {
        seen.insert(payload_kind(&entry.payload));
        match &entry.payload {
            EntryPayload::Blank => json!("blank"),
            EntryPayload::Normal(proposal) => {
                let applied = ReplicatedState::<TypeConfig>::apply(registry, proposal);
                seen.extend(proposal.commands.iter().map(command_kind));
                seen.extend(applied.outcomes.iter().map(outcome_kind));
                json!({ "applied": applied })
            }
            EntryPayload::Membership(membership) => json!({ "membership": membership }),
        }
    }

    /// The whole registry, by name (an enum decoded as another variant shows here even
    /// when no answer depends on it).
    fn state(registry: &Registry) -> Value {
        json!({
            "floor": registry.floor(),
            "nodes": registry.nodes().collect::<Vec<_>>(),
            "shards": registry
                .shards_after(None)
                .map(|(id, record)| (id.to_string(), record))
                .collect::<Vec<_>>(),
        })
    }

    /// Entries pinned on 2026-12-07 still decode to what they were (re-encoding gives
    /// the same bytes: no variant inserted or reordered, no field added) and applying
    /// them in order still answers, and leaves, what it did then; the registry's snapshot
    /// encoding, with and without a floor, still reads back and is still written.
    #[test]
    fn pinned_log_entries_decode_and_apply_as_they_always_did() {
        let mut registry = Registry::default();
        let mut seen = BTreeSet::new();
        for (at, line) in lines() {
            let recorded_state = match line {
                Line::Bump(by, recorded_state) => {
                    registry
                        .bump_generations(by)
                        .unwrap_or_else(|e| panic!("line {at}: {e}"));
                    recorded_state
                }
                Line::Snapshot(bytes, recorded_state) => {
                    let decoded: Registry = controller_raft::codec::decode(&bytes)
                        .unwrap_or_else(|e| panic!("line {at} no longer decodes: {e}"));
                    assert_eq!(
                        state(&decoded),
                        recorded_state,
                        "line {at} reads otherwise now"
                    );
                    assert_eq!(
                        controller_raft::codec::encode(&registry.frozen()).unwrap(),
                        bytes,
                        "line {at}: the registry encodes differently now"
                    );
                    recorded_state
                }
                Line::Entry(bytes, recorded_answer, recorded_state) => {
                    let entry: Entry = controller_raft::codec::decode(&bytes)
                        .unwrap_or_else(|e| panic!("line {at} no longer decodes: {e}"));
                    assert_eq!(
                        controller_raft::codec::encode(&entry).unwrap(),
                        bytes,
                        "line {at} encodes differently now: {entry:?}"
                    );
                    assert_eq!(
                        answer(&entry, &mut registry, &mut seen),
                        recorded_answer,
                        "line {at} ({entry:?}) answers differently now"
                    );
                    recorded_state
                }
            };
            assert_eq!(
                state(&registry),
                recorded_state,
                "line {at} leaves the registry otherwise now"
            );
            seen.extend(
                registry
                    .nodes()
                    .map(|(_, node)| scheduling_kind(node.scheduling)),
            );
        }
        // Every payload, command, outcome and policy a log entry can meet is pinned by
        // some line.
        for kind in COMMANDS
            .iter()
            .chain(&PAYLOADS)
            .chain(&POLICIES)
            .chain(&OUTCOMES)
        {
            assert!(seen.contains(kind), "no line of the fixture shows {kind}");
        }
    }

    // Each arm names its variant through these arrays, with no wildcard: a new variant
    // does not compile until it has an arm, and an arm past the end of its array does not
    // compile until the array grows, after which the test asks for a line that shows it.
    const COMMANDS: [&str; 6] = [
        "AttachHook",
        "ReAttach",
        "RegisterNode",
        "Migrate",
        "ConfigureNode",
        "DeleteNode",
    ];
    const PAYLOADS: [&str; 3] = ["Blank", "Normal", "Membership"];
    const POLICIES: [&str; 5] = ["Active", "Filling", "Pause", "PauseForRestart", "Draining"];
    /// Outcomes and refusals (the floor's refusal is a restore's, never an entry's, and
    /// is left out).
    const OUTCOMES: [&str; 11] = [
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

    fn command_kind(command: &Command) -> &'static str {
        match command {
            Command::AttachHook { .. } => COMMANDS[0],
            Command::ReAttach { .. } => COMMANDS[1],
            Command::RegisterNode { .. } => COMMANDS[2],
            Command::Migrate { .. } => COMMANDS[3],
            Command::ConfigureNode { .. } => COMMANDS[4],
            Command::DeleteNode { .. } => COMMANDS[5],
        }
    }

    fn payload_kind(payload: &EntryPayload<TypeConfig>) -> &'static str {
        match payload {
            EntryPayload::Blank => PAYLOADS[0],
            EntryPayload::Normal(_) => PAYLOADS[1],
            EntryPayload::Membership(_) => PAYLOADS[2],
        }
    }

    fn scheduling_kind(policy: crate::domain::SchedulingPolicy) -> &'static str {
        use crate::domain::SchedulingPolicy as P;
        match policy {
            P::Active => POLICIES[0],
            P::Filling => POLICIES[1],
            P::Pause => POLICIES[2],
            P::PauseForRestart => POLICIES[3],
            P::Draining => POLICIES[4],
        }
    }

    fn outcome_kind(outcome: &Outcome) -> &'static str {
        match outcome {
            Outcome::Attached { .. } => OUTCOMES[0],
            Outcome::ReAttached { .. } => OUTCOMES[1],
            Outcome::NodeRegistered => OUTCOMES[2],
            Outcome::Migrated { .. } => OUTCOMES[3],
            Outcome::NodeConfigured => OUTCOMES[4],
            Outcome::NodeDeleted => OUTCOMES[5],
            Outcome::Refused(refusal) => match refusal {
                Refusal::NodeConflict { .. } => OUTCOMES[6],
                Refusal::UnknownNode(_) => OUTCOMES[7],
                Refusal::UnknownShard(_) => OUTCOMES[8],
                Refusal::GenerationExhausted(_) => OUTCOMES[9],
                Refusal::NodeInUse { .. } => OUTCOMES[10],
                // Only a restore's bump meets it.
                Refusal::FloorExhausted => "FloorExhausted",
            },
        }
    }
}
