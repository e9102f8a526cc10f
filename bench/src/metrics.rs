//! Server-side figures for a run. `/metrics` (Prometheus text) is read when a replica
//! serves it; the bench does not know its metric names in advance, so it reports the
//! counters that moved during the run. Without it the figures are "n/a"; the Raft log
//! index from `/v1/cluster` (entries appended per operation) is always available.

use std::collections::BTreeMap;
use std::time::Duration;

/// Metric samples by full name with labels (`name{a="b"}`), as Prometheus text lists them.
pub type Scrape = BTreeMap<String, f64>;

/// `GET {url}/metrics`, parsed; `None` if the replica does not serve it.
pub async fn scrape(http: &reqwest::Client, url: &str) -> Option<Scrape> {
    let response = http
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(parse(&response.text().await.ok()?))
}

/// Parses Prometheus text exposition: `name{labels} value [timestamp]`; comments skipped.
pub fn parse(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Labels may contain spaces inside quotes: split after the closing brace if any.
        let split_at = match line.find('{') {
            Some(_) => line.rfind('}').map(|i| i + 1),
            None => line.find(char::is_whitespace),
        };
        let Some(at) = split_at else { continue };
        let (name, rest) = line.split_at(at);
        if let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.insert(name.trim().to_owned(), value);
        }
    }
    out
}

/// Counters (`*_total`, `*_count`, `*_sum`) that grew between two scrapes, largest growth
/// first, at most `limit`.
pub fn moved(before: &Scrape, after: &Scrape, limit: usize) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .iter()
        .filter(|(name, _)| {
            let base = name.split('{').next().unwrap_or(name);
            base.ends_with("_total") || base.ends_with("_count") || base.ends_with("_sum")
        })
        .filter_map(|(name, value)| {
            let delta = value - before.get(name).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| (name.clone(), delta))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.truncate(limit);
    out
}

/// Growth of the sum of all series of metric `name` (any labels) between two scrapes.
fn delta(before: &Scrape, after: &Scrape, name: &str) -> Option<f64> {
    let sum = |scrape: &Scrape| {
        let series: Vec<f64> = scrape
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| *v)
            .collect();
        (!series.is_empty()).then(|| series.iter().sum::<f64>())
    };
    Some(sum(after)? - sum(before).unwrap_or(0.0))
}

/// Ratios of the replica's own counters that say how work was grouped: commands per
/// Raft entry, reads per leadership round, mean flush time. Empty if the names differ.
fn known_figures(before: &Scrape, after: &Scrape) -> Vec<String> {
    let d = |name| delta(before, after, name);
    let mut out = Vec::new();
    if let (Some(commands), Some(proposals)) = (
        d("psc_raft_proposed_commands_total"),
        d("psc_raft_proposals_total"),
    ) {
        if proposals > 0.0 {
            out.push(format!("{:.1} commands/entry", commands / proposals));
        }
    }
    if let Some(shared) = reads_per_round(before, after) {
        out.push(format!("{shared:.1} reads/leadership round"));
    }
    if let (Some(sum), Some(count)) = (
        d("psc_storage_flush_duration_seconds_sum"),
        d("psc_storage_flush_duration_seconds_count"),
    ) {
        if count > 0.0 {
            out.push(format!(
                "{count:.0} flushes, mean {:.2} ms",
                sum / count * 1000.0
            ));
        }
    }
    out
}

/// How many reads shared each read-index round on a replica, if it ran any. On the
/// leader since follower reads this is 1.0 (each round answers one follower's request);
/// the sharing shows on a follower, which coalesces the validates it receives before
/// asking the leader.
pub fn reads_per_round(before: &Scrape, after: &Scrape) -> Option<f64> {
    let reads = delta(before, after, "psc_read_index_reads_total")?;
    let rounds = delta(before, after, "psc_read_index_rounds_total")?;
    (rounds > 0.0).then(|| reads / rounds)
}

/// A follower's mean time per read round asking the leader for a read index, then
/// waiting to apply it, in microseconds; `None` when it served no such round (or runs a
/// build without these counters).
pub fn follower_round_phases(before: &Scrape, after: &Scrape) -> Option<(f64, f64)> {
    let rounds = delta(before, after, "psc_follower_read_rounds_total")?;
    let fetch = delta(before, after, "psc_follower_read_fetch_microseconds_total")?;
    let apply = delta(
        before,
        after,
        "psc_follower_read_apply_wait_microseconds_total",
    )?;
    (rounds > 0.0).then(|| (fetch / rounds, apply / rounds))
}

/// One line describing what the server's counters did, or "n/a".
pub fn describe(before: Option<&Scrape>, after: Option<&Scrape>) -> String {
    match (before, after) {
        (Some(before), Some(after)) => {
            let known = known_figures(before, after);
            if !known.is_empty() {
                return format!("leader: {}", known.join(", "));
            }
            let moved = moved(before, after, 4);
            if moved.is_empty() {
                "no counter moved".to_owned()
            } else {
                moved
                    .iter()
                    .map(|(name, delta)| format!("{name} +{delta}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        _ => "n/a (the replica serves no /metrics)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text_and_reports_moved_counters() {
        let before = parse(
            "# HELP x_total things\n# TYPE x_total counter\nx_total 5\n\
             fsync_seconds_sum{dev=\"a b\"} 1.5\nfsync_seconds_count{dev=\"a b\"} 3\n\
             gauge_bytes 100\n",
        );
        assert_eq!(before["x_total"], 5.0);
        let rounds = |reads, rounds| {
            parse(&format!(
                "psc_read_index_reads_total {reads}\npsc_read_index_rounds_total {rounds}\n"
            ))
        };
        assert_eq!(reads_per_round(&rounds(10, 4), &rounds(40, 14)), Some(3.0));
        assert_eq!(reads_per_round(&rounds(10, 4), &rounds(10, 4)), None);
        assert_eq!(before["fsync_seconds_count{dev=\"a b\"}"], 3.0);
        let after = parse("x_total 9 1700000000\nfsync_seconds_count{dev=\"a b\"} 3\ngauge_bytes 900\nnew_total 1\n");
        let moved = moved(&before, &after, 10);
        assert_eq!(
            moved,
            vec![("x_total".to_owned(), 4.0), ("new_total".to_owned(), 1.0)]
        );
        assert_eq!(
            describe(None, Some(&after)),
            "n/a (the replica serves no /metrics)"
        );
    }

    #[test]
    fn known_counters_become_ratios() {
        let before = parse(
            "psc_raft_proposals_total 10\npsc_raft_proposed_commands_total 100\n\
             psc_storage_flush_duration_seconds_sum 0.5\n\
             psc_storage_flush_duration_seconds_count 10\n",
        );
        let after = parse(
            "psc_raft_proposals_total 20\npsc_raft_proposed_commands_total 300\n\
             psc_storage_flush_duration_seconds_sum 0.7\n\
             psc_storage_flush_duration_seconds_count 110\n",
        );
        assert_eq!(
            describe(Some(&before), Some(&after)),
            "leader: 20.0 commands/entry, 100 flushes, mean 2.00 ms"
        );
        // Unknown names fall back to the counters that moved.
        let plain = describe(Some(&parse("a_total 1\n")), Some(&parse("a_total 3\n")));
        assert_eq!(plain, "a_total +2");
    }
}
