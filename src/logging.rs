//! Logging set-up, once per process. Every line of a replica carries `replica=N`, so the
//! interleaved output of a local cluster (or three log files side by side) can be told
//! apart; `--log-format json` gives one JSON object per line for log pipelines.
//!
//! Warnings and errors are capped per place in the code ([`Repeats`]): with one replica
//! down, openraft logs an error for every leadership round of every read, hundreds a
//! second under validate traffic, and a log pipeline drowns in one fact. The first few
//! of each window are written and the rest counted in one summary line. And a few of
//! openraft's warnings that describe its normal working, not a problem, are dropped
//! (`ROUTINE`): an operator taught by them to skim past WARN lines misses the real ones.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Prefixes every text line with `replica=N`.
struct WithReplica<F> {
    inner: F,
    replica: u64,
}

impl<S, N, F> FormatEvent<S, N> for WithReplica<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        write!(writer, "replica={} ", self.replica)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// One JSON object per line: timestamp, level, target, replica (when known), message and
/// the event's fields, flattened.
struct JsonLines {
    replica: Option<u64>,
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(replica) = self.replica {
            line.insert("replica".into(), replica.into());
        }
        event.record(&mut JsonFields(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Installs the global subscriber; `replica` tags every line when set.
pub fn init(filter: &str, format: LogFormat, replica: Option<u64>) {
    let repeats = Repeats::default();
    // A second init (tests starting several servers in one process) keeps the first.
    if subscriber(filter, format, replica, repeats.clone())
        .try_init()
        .is_ok()
    {
        repeats.spawn_summaries();
    }
}

/// What [`init`] installs: the `--log` filter, the format, and the cap on repeats.
fn subscriber(
    filter: &str,
    format: LogFormat,
    replica: Option<u64>,
    repeats: Repeats,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("invalid --log filter {filter:?} ({e}); using info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match (format, replica) {
        (LogFormat::Json, replica) => Box::new(
            builder
                .with_ansi(false)
                .event_format(JsonLines { replica })
                .finish()
                .with(repeats),
        ),
        (LogFormat::Text, Some(replica)) => Box::new(
            builder
                .event_format(WithReplica {
                    inner: tracing_subscriber::fmt::format(),
                    replica,
                })
                .finish()
                .with(repeats),
        ),
        (LogFormat::Text, None) => Box::new(builder.finish().with(repeats)),
    }
}

/// Warnings (target, start of the message) that every election produces on a healthy
/// cluster. openraft 0.9 logs one for each vote answer that arrives after its candidate
/// already won or gave up: with three voters, several at every start and every change of
/// leader. The message is stale by design and openraft ignores it; the change of leader
/// itself is logged at info by this service.
const ROUTINE: &[(&str, &str)] = &[(
    "openraft::core::raft_core",
    "A message will be ignored because vote changed",
)];

/// Whether `event` is one of the [`ROUTINE`] warnings. The message is only formatted for
/// events of a target listed there.
fn routine(event: &tracing::Event<'_>) -> bool {
    let target = event.metadata().target();
    if !ROUTINE.iter().any(|(listed, _)| *listed == target) {
        return false;
    }
    struct Message(String);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    let mut message = Message(String::new());
    event.record(&mut message);
    ROUTINE
        .iter()
        .any(|(listed, start)| *listed == target && message.0.starts_with(start))
}

/// Caps warnings and errors per callsite: [`Repeats::SHOWN`] per window are let through,
/// the rest are counted, and [`Repeats::summarize`] (every [`Repeats::WINDOW`] on a
/// thread of its own) writes one line per callsite that had any suppressed, then opens
/// the next window. Information and debug lines are never held back: they are one per
/// request or event by design, and an operator who turns them on wants them all.
#[derive(Clone, Default)]
pub struct Repeats {
    seen: Arc<Mutex<HashMap<Place, Seen>>>,
}

/// Where a line comes from. Records of the `log` crate (sled's) all arrive through one
/// callsite per level, so they are told apart by the place the record names instead;
/// otherwise one chatty `log` message would hold back every other one.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Place {
    Callsite(Identifier),
    LogRecord {
        target: String,
        file: Option<String>,
        line: Option<u32>,
    },
}

struct Seen {
    level: Level,
    target: String,
    at: String,
    shown: u32,
    suppressed: u64,
}

impl Seen {
    fn new(metadata: &Metadata<'_>) -> Seen {
        Seen {
            level: *metadata.level(),
            target: metadata.target().to_owned(),
            at: format!(
                "{}:{}",
                short_path(metadata.file().unwrap_or("?")),
                metadata.line().unwrap_or(0)
            ),
            shown: 0,
            suppressed: 0,
        }
    }
}

impl Repeats {
    /// Lines let through per callsite and window.
    pub const SHOWN: u32 = 20;
    pub const WINDOW: Duration = Duration::from_secs(10);

    fn capped(metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }

    /// Whether `event` may be written now.
    fn admit(&self, event: &tracing::Event<'_>) -> bool {
        let normalized = event.normalized_metadata();
        let (place, metadata) = match &normalized {
            Some(record) => (
                Place::LogRecord {
                    target: record.target().to_owned(),
                    file: record.file().map(str::to_owned),
                    line: record.line(),
                },
                record,
            ),
            None => (
                Place::Callsite(event.metadata().callsite()),
                event.metadata(),
            ),
        };
        let mut seen = self.seen.lock().expect("log repeats lock");
        let entry = seen.entry(place).or_insert_with(|| Seen::new(metadata));
        if entry.shown < Self::SHOWN {
            entry.shown += 1;
            true
        } else {
            entry.suppressed += 1;
            false
        }
    }

    /// Writes one line per callsite whose lines were held back, and opens a new window.
    pub fn summarize(&self) {
        let suppressed: Vec<Seen> = {
            let mut seen = self.seen.lock().expect("log repeats lock");
            seen.drain()
                .map(|(_, s)| s)
                .filter(|s| s.suppressed > 0)
                .collect()
        };
        // Outside the lock: these lines pass through this layer too.
        for held in suppressed {
            tracing::warn!(
                suppressed = held.suppressed,
                level = %held.level,
                of = held.target,
                at = held.at,
                "repeated log lines held back (more than {} in {:?})",
                Self::SHOWN,
                Self::WINDOW
            );
        }
    }

    fn spawn_summaries(&self) {
        let repeats = self.clone();
        let spawned = std::thread::Builder::new()
            .name("log-repeats".into())
            .spawn(move || loop {
                std::thread::sleep(Self::WINDOW);
                repeats.summarize();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "repeated log lines will not be summarized");
        }
    }
}

/// A dependency's source path from its crate directory on (`openraft-0.9.25/src/...`),
/// not from the build machine's cargo registry.
fn short_path(path: &str) -> &str {
    match path.split_once("/registry/src/") {
        Some((_, rest)) => rest
            .split_once('/')
            .map_or(rest, |(_, from_crate)| from_crate),
        None => path,
    }
}

/// A layer that only vetoes: it writes nothing and leaves the level filter to `--log`
/// (a per-layer filter would have had to repeat the filter's maximum level, and checking
/// every event against two filters measurably slowed the write path).
impl<S: tracing::Subscriber> Layer<S> for Repeats {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if Self::capped(metadata) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _: Context<'_, S>) -> bool {
        !Self::capped(event.metadata()) || (!routine(event) && self.admit(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap();
            text.lines().map(str::to_owned).collect()
        }
    }

    /// A subscriber with the cap, writing into memory.
    fn capped_into_memory() -> (Captured, Repeats, impl tracing::Subscriber) {
        let out = Captured::default();
        let writer = out.clone();
        let repeats = Repeats::default();
        let subscriber = tracing_subscriber::registry().with(repeats.clone()).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        (out, repeats, subscriber)
    }

    #[test]
    fn the_log_filter_alone_sets_the_maximum_level() {
        use tracing::level_filters::LevelFilter;
        for (format, replica) in [
            (LogFormat::Text, None),
            (LogFormat::Text, Some(1)),
            (LogFormat::Json, Some(1)),
        ] {
            let subscriber = subscriber("info,openraft=warn", format, replica, Repeats::default());
            assert_eq!(
                subscriber.max_level_hint(),
                Some(LevelFilter::INFO),
                "{format:?}, replica {replica:?}"
            );
        }
    }

    #[test]
    fn a_flood_of_one_warning_is_cut_to_a_few_lines_and_a_count() {
        let (out, repeats, subscriber) = capped_into_memory();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..500 {
                tracing::error!(target = 2, i, "peer unreachable");
                if i % 100 == 0 {
                    tracing::warn!("another warning");
                    tracing::info!(i, "a request");
                }
            }
            let lines = out.lines();
            let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
            assert_eq!(count("peer unreachable"), Repeats::SHOWN as usize);
            assert_eq!(
                count("another warning"),
                5,
                "another callsite has its own cap"
            );
            assert_eq!(count("a request"), 5, "information lines are never capped");

            repeats.summarize();
            let lines = out.lines();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].contains("suppressed=480"), "{}", lines[0]);
            assert!(lines[0].contains("src/logging.rs"), "{}", lines[0]);

            assert_eq!(
                short_path("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/openraft-0.9.25/src/core/raft_core.rs"),
                "openraft-0.9.25/src/core/raft_core.rs"
            );

            // A new window lets the next ones through again, and a quiet one says nothing.
            tracing::error!(target = 2, "peer unreachable");
            assert_eq!(out.lines().len(), 1);
            repeats.summarize();
            assert!(out.lines().is_empty());
        });
    }

    #[test]
    fn the_routine_warnings_of_every_election_are_dropped_and_no_other() {
        let (out, _, subscriber) = capped_into_memory();
        tracing::subscriber::with_default(subscriber, || {
            let vote = "T1-N2:committed";
            tracing::warn!(
                target: "openraft::core::raft_core",
                "A message will be ignored because vote changed: msg sent by vote: {}; current my vote: None; when (VoteResponse)",
                vote
            );
            tracing::warn!(target: "openraft::core::raft_core", "a vote was refused");
            tracing::warn!(
                target: "somewhere::else",
                "A message will be ignored because vote changed"
            );
            let lines = out.lines();
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines[0].contains("a vote was refused"), "{lines:?}");
            assert!(lines[1].contains("somewhere::else"), "{lines:?}");
        });
    }

    #[test]
    fn records_of_the_log_crate_are_capped_by_where_they_come_from() {
        // sled logs through the `log` crate, whose records reach tracing through one
        // callsite per level.
        let _ = tracing_log::LogTracer::init();
        let (out, repeats, subscriber) = capped_into_memory();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                log::warn!(target: "sled::pagecache", "io error while flushing {i}");
                if i % 20 == 0 {
                    log::warn!(target: "sled::tree", "a different record");
                }
            }
            let lines = out.lines();
            let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
            assert_eq!(count("io error while flushing"), Repeats::SHOWN as usize);
            assert_eq!(count("a different record"), 5, "{lines:?}");

            repeats.summarize();
            let lines = out.lines();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].contains("suppressed=80"), "{}", lines[0]);
            assert!(lines[0].contains("of=\"sled::pagecache\""), "{}", lines[0]);
            assert!(lines[0].contains("src/logging.rs"), "{}", lines[0]);
        });
    }
}
