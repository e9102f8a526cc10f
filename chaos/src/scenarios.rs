//! Named regression scenarios: fixed fault sequences that once broke the controller.
//!
//! Each bug a harness found is kept here (or, where it needs finer control than faults
//! give, as an integration test named in RELIABILITY.md), so that it is replayed by name
//! and in CI for as long as the project lives: `cargo run -p chaos -- scenario NAME`.

use serde::Serialize;

use crate::faults::FaultKind;

/// Which replica a step hits, for faults that hit one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Aim {
    /// One drawn from the seed, as in a random run.
    Drawn,
    /// The replica the previous step hit.
    SameAsPrevious,
}

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    /// What went wrong once, and where the fix lives.
    pub about: &'static str,
    pub replicas: u64,
    pub steps: &'static [(FaultKind, Aim)],
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "amnesia-joined-member",
        about: "A replica that joined with --join (here: after the lost-disk runbook) loses \
                its disk again and restarts with the same flags. It used to be told 'already \
                a member', voted with an empty log, and the leader's Raft core panicked on a \
                follower log that went backwards; the replica with the dead core kept \
                serving. Fixed in src/server.rs (leave before joining again; a dead core \
                stops the process). Found by `chaos` seed 2.",
        replicas: 3,
        steps: &[
            (FaultKind::MemberReplace, Aim::Drawn),
            (FaultKind::DiskLoss, Aim::SameAsPrevious),
            (FaultKind::KillLeader, Aim::Drawn),
        ],
    },
    Scenario {
        name: "amnesia-initial-member",
        about: "An initial member loses its disk and restarts with --initial-cluster. It used \
                to wait to be replicated to while voting with an empty log (found by the \
                Docker deploy test; see tests/integration/amnesia.rs). Fixed in \
                src/bootstrap.rs: it leaves and joins again before Raft starts.",
        replicas: 3,
        steps: &[
            (FaultKind::DiskLoss, Aim::Drawn),
            (FaultKind::KillLeader, Aim::Drawn),
            (FaultKind::DiskLoss, Aim::Drawn),
        ],
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Scenarios that need message-level control, run in one process (`crate::sim::scenario`).
pub const IN_PROCESS: &[(&str, &str)] = &[
    (
        "truncated-write-retried",
        "A write the leader appended and then had to truncate (a new leader overwrote its \
         log) survives on another replica, which commits it. openraft answers such a write \
         'forward to the leader', the same as one it never appended; taking that for 'not \
         applied' and sending the write again applies it twice (an earlier harness found \
         this; src/replica/mod.rs reports both as of unknown fate). Five replicas, \
         message-level cuts: the old leader's caller must see the write's fate as unknown, \
         and the generation must go up by one.",
    ),
    (
        "isolated-leader-refuses",
        "A leader cut off from its peers keeps leading in its own view (openraft 0.9 has no \
         quorum check), so writes sent to it used to wait out their deadline and end 'may \
         or may not be applied', even those that never left its queue. Three replicas, \
         the leader isolated with two writes in flight and one queued behind them: once \
         it has heard from no quorum for twice the lease, the queued write and a new one \
         must be answered 'not the leader' (nothing applied), and the checker holds them \
         to it after the partition heals.",
    ),
    (
        "handover-waits-for-writes",
        "A leader stopping on SIGTERM asked its successor to campaign while writes it had \
         already handed to Raft were still being appended; its log then held more than the \
         successor's, so it refused its vote, lost its term and won the next election \
         itself: about one handover in twenty under attach traffic took 0.9 s instead of \
         25 ms (found with `bench failover --signal term`). src/membership.rs now waits \
         until the writes in flight settle. Three replicas: a cut-off leader holds a write \
         in flight while handing over; the writes must not count as settled until the \
         links heal, and a new write must be refused 'not the leader'.",
    ),
];
