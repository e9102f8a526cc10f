//! Rows of results: several runs of one configuration reduced to their medians, printed as
//! they finish (for progress) and collected into markdown tables (for BENCHMARKS.md).

use crate::stats::{median, ms, rate, Summary, Table};

/// The medians of several runs of one configuration.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    /// Where the traffic went and how (e.g. "follower, c=64").
    pub config: String,
    pub runs: usize,
    pub throughput: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub errors: u64,
    /// Free-form server-side figures: Raft entries per op, /metrics counters.
    pub server: String,
    /// One or two error messages, if there were errors.
    pub error_samples: Vec<String>,
}

fn med(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = values.flatten().collect();
    median(&v)
}

impl Row {
    /// Reduces `runs` (one summary per run) to medians; errors are summed.
    pub fn from_runs(scenario: &str, config: &str, runs: &[Summary], server: String) -> Row {
        Row {
            scenario: scenario.to_owned(),
            config: config.to_owned(),
            runs: runs.len(),
            throughput: med(runs.iter().map(|s| Some(s.throughput))),
            p50_ms: med(runs.iter().map(|s| s.p50_ms)),
            p99_ms: med(runs.iter().map(|s| s.p99_ms)),
            p999_ms: med(runs.iter().map(|s| s.p999_ms)),
            max_ms: med(runs.iter().map(|s| s.max_ms)),
            errors: runs.iter().map(|s| s.errors).sum(),
            server,
            error_samples: {
                let mut samples: Vec<String> = Vec::new();
                for message in runs.iter().flat_map(|s| s.error_samples.iter()) {
                    // Long server messages are cut: the table cell must stay readable.
                    let short: String = message.chars().take(160).collect();
                    if samples.len() < 2 && !samples.contains(&short) {
                        samples.push(short);
                    }
                }
                samples
            },
        }
    }

    pub fn print(&self) {
        println!(
            "{} [{}] median of {}: {}/s, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms, {} errors; server: {}",
            self.scenario,
            self.config,
            self.runs,
            self.throughput.map_or("n/a".to_owned(), rate),
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.p999_ms),
            ms(self.max_ms),
            self.errors,
            self.server
        );
        for message in &self.error_samples {
            println!("    error: {message}");
        }
    }
}

pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "scenario",
        "configuration",
        "runs",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "server side",
    ]);
    for r in rows {
        t.row(vec![
            r.scenario.clone(),
            r.config.clone(),
            r.runs.to_string(),
            r.throughput.map_or("n/a".to_owned(), rate),
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            ms(r.max_ms),
            if r.error_samples.is_empty() {
                r.errors.to_string()
            } else {
                format!(
                    "{} (e.g. {})",
                    r.errors,
                    r.error_samples.join("; ").replace('|', "/")
                )
            },
            r.server.clone(),
        ]);
    }
    t
}

/// A target from the issue and whether the measured figure meets it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

pub fn verdict_table(verdicts: &[Verdict]) -> Table {
    let mut t = Table::new(&["target", "measured", "met"]);
    for v in verdicts {
        t.row(vec![
            v.target.clone(),
            v.measured.clone(),
            match v.met {
                Some(true) => "yes".to_owned(),
                Some(false) => "**no**".to_owned(),
                None => "n/a".to_owned(),
            },
        ]);
    }
    t
}
