//! Latency figures: every successful operation's latency is kept (a bounded run keeps at
//! most a few million u32s), so percentiles are exact nearest-rank values rather than
//! histogram buckets, and "median of several runs" can be taken over exact figures.

use std::fmt;
use std::time::Duration;

/// The latencies and errors of one kind of operation in one run.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Latency of each successful operation, in microseconds.
    pub micros: Vec<u32>,
    pub errors: u64,
    /// A few error messages, to show what went wrong.
    pub error_samples: Vec<String>,
}

impl Samples {
    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn record_error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < 3 && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        for message in other.error_samples {
            if self.error_samples.len() < 3 && !self.error_samples.contains(&message) {
                self.error_samples.push(message);
            }
        }
    }

    pub fn summarize(mut self, elapsed: Duration) -> Summary {
        self.micros.sort_unstable();
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            ops: self.micros.len() as u64,
            errors: self.errors,
            elapsed,
            throughput: self.micros.len() as f64 / secs,
            p50_ms: percentile_ms(&self.micros, 50.0),
            p99_ms: percentile_ms(&self.micros, 99.0),
            p999_ms: percentile_ms(&self.micros, 99.9),
            max_ms: self.micros.last().map(|m| f64::from(*m) / 1000.0),
            error_samples: self.error_samples,
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value such that at least `p`
/// percent of the values are less than or equal to it. `None` for no values.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // The epsilon keeps float noise (99.9 / 100 * 1000 = 999.0000000000001) from
    // bumping an exact rank to the next one.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn percentile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    percentile(sorted, p).map(|m| f64::from(m) / 1000.0)
}

/// Median of a set of figures (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// What one run of one kind of operation measured.
#[derive(Debug, Clone)]
pub struct Summary {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub throughput: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub error_samples: Vec<String>,
}

/// Formats an optional millisecond figure; "n/a" when nothing was measured.
pub fn ms(value: Option<f64>) -> String {
    match value {
        None => "n/a".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// Formats a rate with thousands separators (12,345/s).
pub fn rate(value: f64) -> String {
    let n = value.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops in {:.1} s = {}/s; p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; {} errors",
            self.ops,
            self.elapsed.as_secs_f64(),
            rate(self.throughput),
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.p999_ms),
            ms(self.max_ms),
            self.errors
        )?;
        if !self.error_samples.is_empty() {
            write!(f, " (e.g. {})", self.error_samples.join("; "))?;
        }
        Ok(())
    }
}

/// A markdown table, built row by row and printed at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| {} |", self.header.join(" | "))?;
        writeln!(
            f,
            "|{}",
            self.header.iter().map(|_| " --- |").collect::<String>()
        )?;
        for row in &self.rows {
            writeln!(f, "| {} |", row.join(" | "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(500));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&v, 100.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // Few samples: p99 of ten values is the largest, never an interpolation.
        let ten: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&ten, 99.0), Some(10));
        assert_eq!(percentile(&ten, 50.0), Some(5));
    }

    #[test]
    fn summary_of_samples() {
        let mut s = Samples::default();
        for m in [3u64, 1, 2, 4] {
            s.record(Duration::from_millis(m));
        }
        s.record_error("boom".into());
        s.record_error("boom".into());
        let sum = s.summarize(Duration::from_secs(2));
        assert_eq!(sum.ops, 4);
        assert_eq!(sum.errors, 2);
        assert_eq!(sum.error_samples, vec!["boom".to_owned()]);
        assert!((sum.throughput - 2.0).abs() < 1e-9);
        assert_eq!(sum.p50_ms, Some(2.0));
        assert_eq!(sum.max_ms, Some(4.0));
    }

    #[test]
    fn medians_and_formatting() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(ms(None), "n/a");
        assert_eq!(ms(Some(0.1234)), "0.12");
        assert_eq!(ms(Some(42.25)), "42.2");
    }
}
