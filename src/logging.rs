//! Logging set-up, once per process. Every line of a replica carries `replica=N`, so the
//! interleaved output of a local cluster (or three log files side by side) can be told
//! apart; `--log-format json` gives one JSON object per line for log pipelines.

use std::fmt;

use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
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

/// Installs the global subscriber; `replica` tags every line when set.
pub fn init(filter: &str, format: LogFormat, replica: Option<u64>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("invalid --log filter {filter:?} ({e}); using info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match (format, replica) {
        (LogFormat::Json, _) => {
            // The JSON formatter records the root span's fields; a replica span carries the id.
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .try_init()
        }
        (LogFormat::Text, Some(replica)) => builder
            .event_format(WithReplica {
                inner: tracing_subscriber::fmt::format(),
                replica,
            })
            .try_init(),
        (LogFormat::Text, None) => builder.try_init(),
    };
    // A second init (tests starting several servers in one process) keeps the first.
    let _ = result;
}
