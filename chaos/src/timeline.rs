//! A picture of a chaos run, for the person who opens the failure folder.
//!
//! The checker's verdict names operations by id; a list of ids and microsecond stamps is
//! hard to read. This module draws the same history as an SVG timeline: one row per
//! client, one bar per request attempt from call to return coloured by what the caller
//! learned, the injected faults as shaded bands behind them, and the operations a
//! violation names outlined in red and spelled out below the chart. Hovering a bar shows
//! everything the history knows about that attempt.
//!
//! The output depends only on the input (no clock, no randomness), so two renders of the
//! same history are byte for byte equal, and it stays bounded on long histories by
//! drawing at most [`MAX_OPS`] bars.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::history::{Answer, FaultSpan, Op, Outcome, Request};

/// What to draw.
pub struct TimelineInput<'a> {
    /// The history: every request attempt.
    pub ops: &'a [Op],
    /// The faults the harness injected, on the history's clock.
    pub faults: &'a [FaultSpan],
    /// Ids of operations named by violations: drawn highlighted (red outline), and their
    /// details listed under the picture.
    pub highlight: &'a [u64],
    /// Only draw ops overlapping this window (µs on the history's clock); `None` =
    /// everything. Used to zoom on the time around a violation.
    pub window_us: Option<(u64, u64)>,
    /// A heading drawn at the top of the picture.
    pub title: String,
}

/// The most bars one picture holds; beyond it the latest ops are left out and a note
/// says how many.
pub const MAX_OPS: usize = 20_000;

/// Total width of the picture, in px.
const WIDTH: f64 = 1600.0;
/// Room on the left for the lane labels.
const LEFT: f64 = 210.0;
/// Room on the right of the plot.
const RIGHT: f64 = 30.0;
/// Where the lanes start: below the title and the fault labels.
const TOP: f64 = 84.0;
/// Height of one lane.
const LANE_H: f64 = 22.0;
/// Height of one bar inside its lane.
const BAR_H: f64 = 14.0;
/// Narrowest bar, so an instant request stays visible.
const MIN_BAR_W: f64 = 1.5;
/// Height of one line of text below the chart.
const LINE_H: f64 = 16.0;
/// Longest client name shown in full as a lane label.
const MAX_LABEL_CHARS: usize = 28;
/// Longest reason or refusal message shown in the text under the chart.
const MAX_REASON_CHARS: usize = 160;

const COLOR_OK: &str = "#2e9e44";
const COLOR_INDETERMINATE: &str = "#f28c28";
const COLOR_REFUSED: &str = "#8c8c8c";
const COLOR_NOT_SENT: &str = "#d3d3d3";
const COLOR_HIGHLIGHT: &str = "#d00000";
const COLOR_FAULT: &str = "#7b3fa0";

/// Renders the timeline as a complete SVG document (starts with `<svg`, ends with
/// `</svg>`).
pub fn render(input: &TimelineInput) -> String {
    let chart = Chart::lay_out(input);
    let mut svg = String::new();
    chart.header(&mut svg, input);
    chart.lanes(&mut svg);
    chart.axis(&mut svg);
    chart.faults(&mut svg, input.faults);
    chart.bars(&mut svg);
    legend(&mut svg, chart.legend_y);
    chart.details(&mut svg);
    svg.push_str("</svg>");
    svg
}

/// What goes where: decided once from the input, before anything is drawn, because the
/// picture's height depends on the lanes and on the text under the chart.
struct Chart<'a> {
    lo: u64,
    hi: u64,
    scale: Scale,
    highlight: BTreeSet<u64>,
    /// The ops drawn, in time order: those overlapping the window, capped at
    /// [`MAX_OPS`] but keeping every highlighted one.
    drawn: Vec<&'a Op>,
    /// One lane per client, sorted by name.
    lanes: BTreeMap<&'a str, usize>,
    lanes_bottom: f64,
    legend_y: f64,
    text_top: f64,
    height: f64,
    /// Notes under the chart (ops left out).
    notes: Vec<String>,
    /// Lines under the chart; `true` for a highlighted op.
    detail_lines: Vec<(String, bool)>,
}

impl<'a> Chart<'a> {
    fn lay_out(input: &TimelineInput<'a>) -> Chart<'a> {
        let highlight: BTreeSet<u64> = input.highlight.iter().copied().collect();
        let (lo, hi) = match input.window_us {
            Some((a, b)) => (a.min(b), a.max(b)),
            None => extent(input.ops, input.faults),
        };

        let mut in_window: Vec<&Op> = input
            .ops
            .iter()
            .filter(|op| op.call_us <= hi && end_us(op) >= lo)
            .collect();
        in_window.sort_by_key(|op| (op.call_us, op.id));
        let total_in_window = in_window.len();
        let mut drawn: Vec<&Op> = Vec::with_capacity(total_in_window.min(MAX_OPS));
        for (n, op) in in_window.into_iter().enumerate() {
            if n < MAX_OPS || highlight.contains(&op.id) {
                drawn.push(op);
            }
        }
        let left_out = total_in_window - drawn.len();

        let lanes: BTreeMap<&str, usize> = drawn
            .iter()
            .map(|op| op.client.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, client)| (client, i))
            .collect();
        let lanes_bottom = TOP + lanes.len().max(1) as f64 * LANE_H;

        let mut notes: Vec<String> = Vec::new();
        if left_out > 0 {
            notes.push(format!(
                "{left_out} of {total_in_window} operations in the window are left out: only the \
                 first {MAX_OPS} in time order (and every highlighted one) are drawn."
            ));
        }
        let detail_lines = highlighted_lines(input.ops, &highlight, lo, hi);

        let axis_bottom = lanes_bottom + 36.0;
        let legend_y = axis_bottom + 12.0;
        let text_top = legend_y + 34.0;
        let height = text_top + (notes.len() + detail_lines.len()) as f64 * LINE_H + 12.0;
        Chart {
            lo,
            hi,
            scale: Scale::new(lo, hi),
            highlight,
            drawn,
            lanes,
            lanes_bottom,
            legend_y,
            text_top,
            height,
            notes,
            detail_lines,
        }
    }

    /// The document's opening, a white background, the title and a one-line summary.
    fn header(&self, svg: &mut String, input: &TimelineInput) {
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"monospace\" font-size=\"12\">",
            w = WIDTH,
            h = self.height.ceil()
        );
        let _ = writeln!(
            svg,
            "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{}\" fill=\"#ffffff\"/>",
            self.height.ceil()
        );
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{}</text>",
            escape(&input.title)
        );
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"38\" fill=\"#444444\">window {} s to {} s; {} of {} operations \
             drawn; {} fault(s)</text>",
            seconds(self.lo),
            seconds(self.hi),
            self.drawn.len(),
            input.ops.len(),
            input.faults.len()
        );
    }

    /// Alternating stripes, one per client, labelled on the left.
    fn lanes(&self, svg: &mut String) {
        svg.push_str("<g id=\"lanes\">\n");
        for (client, &i) in &self.lanes {
            let y = TOP + i as f64 * LANE_H;
            let fill = if i % 2 == 0 { "#f4f4f4" } else { "#ffffff" };
            let _ = writeln!(
                svg,
                "<rect x=\"{LEFT}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{LANE_H}\" fill=\"{fill}\"/>",
                self.scale.plot_w
            );
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}<title>{}</title></text>",
                LEFT - 8.0,
                y + LANE_H / 2.0 + 4.0,
                escape(&clip(client, MAX_LABEL_CHARS)),
                escape(client)
            );
        }
        if self.lanes.is_empty() {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#888888\">no operations in this window</text>",
                LEFT + 8.0,
                TOP + LANE_H / 2.0 + 4.0
            );
        }
        svg.push_str("</g>\n");
    }

    /// The time axis: grid lines across the lanes, tick labels below.
    fn axis(&self, svg: &mut String) {
        let (lo, hi, lanes_bottom) = (self.lo, self.hi, self.lanes_bottom);
        svg.push_str("<g id=\"axis\">\n");
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{lanes_bottom:.1}\" x2=\"{:.1}\" y2=\"{lanes_bottom:.1}\" \
             stroke=\"#333333\"/>",
            LEFT + self.scale.plot_w
        );
        let step = tick_step(hi - lo);
        let decimals = tick_decimals(step);
        let mut tick = lo.div_ceil(step).saturating_mul(step);
        let mut guard = 0;
        while tick <= hi && guard < 200 {
            let x = self.scale.x(tick);
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#dddddd\"/>",
                lanes_bottom + 4.0
            );
            let _ = writeln!(
                svg,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                lanes_bottom + 17.0,
                tick_label(tick, decimals)
            );
            guard += 1;
            match tick.checked_add(step) {
                Some(next) => tick = next,
                None => break,
            }
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444444\">time (s)</text>",
            LEFT + self.scale.plot_w / 2.0,
            lanes_bottom + 32.0
        );
        svg.push_str("</g>\n");
    }

    /// Faults: bands behind the bars from injection to healing, labels above the lanes,
    /// and a dashed line where the cluster was healthy again.
    fn faults(&self, svg: &mut String, faults: &[FaultSpan]) {
        let (lo, hi, lanes_bottom) = (self.lo, self.hi, self.lanes_bottom);
        svg.push_str("<g id=\"faults\">\n");
        let mut label_row = 0usize;
        for fault in faults {
            let healed = fault.healed_us.map(|h| h.max(fault.start_us));
            let band_end = healed.unwrap_or(hi);
            let targets = fault
                .targets
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let label = format!("{} [{}]", fault.name, targets);
            let tooltip = format!(
                "fault {} on replicas [{}]: injected {} s, healed {}, healthy {}",
                fault.name,
                targets,
                seconds(fault.start_us),
                fault
                    .healed_us
                    .map_or("never".to_owned(), |t| format!("{} s", seconds(t))),
                fault
                    .healthy_us
                    .map_or("never".to_owned(), |t| format!("{} s", seconds(t))),
            );
            if fault.start_us <= hi && band_end >= lo {
                let x1 = self.scale.x(fault.start_us);
                let x2 = self.scale.x(band_end);
                let y_label = 52.0 + (label_row % 3) as f64 * 11.0;
                label_row += 1;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                     fill=\"{COLOR_FAULT}\" fill-opacity=\"0.13\" stroke=\"{COLOR_FAULT}\" \
                     stroke-opacity=\"0.4\" stroke-width=\"0.5\"><title>{}</title></rect>",
                    y_label - 9.0,
                    (x2 - x1).max(1.0),
                    lanes_bottom - (y_label - 9.0),
                    escape(&tooltip)
                );
                let _ = writeln!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{y_label:.1}\" font-size=\"10\" fill=\"{COLOR_FAULT}\">{}</text>",
                    x1 + 2.0,
                    escape(&label)
                );
            }
            if let Some(healthy) = fault.healthy_us.filter(|t| (lo..=hi).contains(t)) {
                let x = self.scale.x(healthy);
                let _ = writeln!(
                    svg,
                    "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{lanes_bottom:.1}\" \
                     stroke=\"{COLOR_FAULT}\" stroke-width=\"1\" stroke-dasharray=\"4 3\">\
                     <title>{}</title></line>",
                    TOP - 4.0,
                    escape(&format!(
                        "healthy again after {label}: {} s",
                        seconds(healthy)
                    ))
                );
            }
        }
        svg.push_str("</g>\n");
    }

    /// One bar per op from call to return, coloured by outcome: plain ones first,
    /// highlighted ones on top.
    fn bars(&self, svg: &mut String) {
        svg.push_str("<g id=\"ops\">\n");
        for pass_highlighted in [false, true] {
            for op in self
                .drawn
                .iter()
                .filter(|op| self.highlight.contains(&op.id) == pass_highlighted)
            {
                let Some(&lane) = self.lanes.get(op.client.as_str()) else {
                    continue;
                };
                let x1 = self.scale.x(op.call_us.max(self.lo));
                let x2 = self.scale.x(end_us(op).min(self.hi));
                let y = TOP + lane as f64 * LANE_H + (LANE_H - BAR_H) / 2.0;
                let stroke = if pass_highlighted {
                    format!(" stroke=\"{COLOR_HIGHLIGHT}\" stroke-width=\"2.5\"")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x1:.2}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{BAR_H}\" \
                     fill=\"{}\"{stroke}><title>{}</title></rect>",
                    (x2 - x1).max(MIN_BAR_W),
                    outcome_color(&op.outcome),
                    escape(&describe(op, None))
                );
            }
        }
        svg.push_str("</g>\n");
    }

    /// The notes and the highlighted ops under the chart, one line each.
    fn details(&self, svg: &mut String) {
        svg.push_str("<g id=\"details\">\n");
        let mut y = self.text_top;
        for note in &self.notes {
            let _ = writeln!(
                svg,
                "<text x=\"10\" y=\"{y:.1}\" fill=\"#884400\">{}</text>",
                escape(note)
            );
            y += LINE_H;
        }
        for (line, is_op) in &self.detail_lines {
            let fill = if *is_op { COLOR_HIGHLIGHT } else { "#000000" };
            let _ = writeln!(
                svg,
                "<text x=\"10\" y=\"{y:.1}\" fill=\"{fill}\">{}</text>",
                escape(line)
            );
            y += LINE_H;
        }
        svg.push_str("</g>\n");
    }
}

/// The lines listing the highlighted ops (all of them, even outside the window `lo..=hi`,
/// in time order), and the highlighted ids the history does not hold.
fn highlighted_lines(
    ops: &[Op],
    highlight: &BTreeSet<u64>,
    lo: u64,
    hi: u64,
) -> Vec<(String, bool)> {
    let mut named: Vec<&Op> = ops.iter().filter(|op| highlight.contains(&op.id)).collect();
    named.sort_by_key(|op| (op.call_us, op.id));
    let missing: Vec<u64> = highlight
        .iter()
        .copied()
        .filter(|id| !named.iter().any(|op| op.id == *id))
        .collect();
    let mut lines: Vec<(String, bool)> = Vec::new();
    if named.is_empty() && missing.is_empty() {
        return lines;
    }
    lines.push(("Highlighted operations:".to_owned(), false));
    for op in &named {
        let mut line = describe(op, Some(MAX_REASON_CHARS));
        if op.call_us > hi || end_us(op) < lo {
            line.push_str(" (outside the window)");
        }
        lines.push((line, true));
    }
    for id in &missing {
        lines.push((format!("op {id}: not in the history"), true));
    }
    lines
}

/// The legend row at `y`: a swatch per outcome, then the highlight, fault and
/// healthy-again marks.
fn legend(svg: &mut String, y: f64) {
    svg.push_str("<g id=\"legend\">\n");
    let swatches: [(&str, &str); 4] = [
        (COLOR_OK, "ok"),
        (COLOR_INDETERMINATE, "indeterminate"),
        (COLOR_REFUSED, "refused"),
        (COLOR_NOT_SENT, "not applied"),
    ];
    let label = |svg: &mut String, x: f64, text: &str| {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\">{text}</text>",
            x + 24.0,
            y + 11.0
        );
    };
    let mut x = LEFT;
    for (color, name) in swatches {
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"18\" height=\"{BAR_H}\" fill=\"{color}\"/>"
        );
        label(svg, x, name);
        x += 150.0;
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"18\" height=\"{BAR_H}\" fill=\"#ffffff\" \
         stroke=\"{COLOR_HIGHLIGHT}\" stroke-width=\"2.5\"/>"
    );
    label(svg, x, "named by a violation");
    x += 210.0;
    let _ = writeln!(
        svg,
        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"18\" height=\"{BAR_H}\" \
         fill=\"{COLOR_FAULT}\" fill-opacity=\"0.13\" stroke=\"{COLOR_FAULT}\" \
         stroke-opacity=\"0.4\" stroke-width=\"0.5\"/>"
    );
    label(svg, x, "fault (injected to healed)");
    x += 240.0;
    let _ = writeln!(
        svg,
        "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" \
         stroke=\"{COLOR_FAULT}\" stroke-dasharray=\"4 3\"/>",
        x + 9.0,
        x + 9.0,
        y + BAR_H
    );
    label(svg, x, "healthy again");
    svg.push_str("</g>\n");
}

/// A window around the highlighted ops: from `margin_us` before the earliest call to
/// `margin_us` after the latest return among them, clamped to the history's extent, or
/// `None` if no op of `ops` is highlighted.
pub fn window_around(ops: &[Op], highlight: &[u64], margin_us: u64) -> Option<(u64, u64)> {
    let wanted: BTreeSet<u64> = highlight.iter().copied().collect();
    let mut named = ops.iter().filter(|op| wanted.contains(&op.id));
    let first = named.next()?;
    let (mut from, mut to) = (first.call_us, end_us(first));
    for op in named {
        from = from.min(op.call_us);
        to = to.max(end_us(op));
    }
    // `ops` is not empty here (it holds `first`), so the history's extent exists.
    let history_from = ops.iter().map(|op| op.call_us).min().unwrap_or(from);
    let history_to = ops.iter().map(end_us).max().unwrap_or(to);
    Some((
        from.saturating_sub(margin_us).max(history_from),
        to.saturating_add(margin_us).min(history_to),
    ))
}

/// When an op ended, never before it began (a record with return before call is drawn
/// as an instant).
fn end_us(op: &Op) -> u64 {
    op.return_us.max(op.call_us)
}

/// The time span of a whole history and its faults; one second from 0 when empty.
fn extent(ops: &[Op], faults: &[FaultSpan]) -> (u64, u64) {
    let starts = ops
        .iter()
        .map(|op| op.call_us)
        .chain(faults.iter().map(|f| f.start_us));
    let ends = ops.iter().map(end_us).chain(faults.iter().flat_map(|f| {
        [Some(f.start_us), f.healed_us, f.healthy_us]
            .into_iter()
            .flatten()
    }));
    match (starts.min(), ends.max()) {
        (Some(lo), Some(hi)) => (lo, hi.max(lo)),
        _ => (0, 1_000_000),
    }
}

/// Maps history time to x within the plot.
struct Scale {
    lo: u64,
    span: f64,
    plot_w: f64,
}

impl Scale {
    fn new(lo: u64, hi: u64) -> Scale {
        Scale {
            lo,
            span: hi.saturating_sub(lo).max(1) as f64,
            plot_w: WIDTH - LEFT - RIGHT,
        }
    }

    fn x(&self, t: u64) -> f64 {
        LEFT + t.saturating_sub(self.lo) as f64 / self.span * self.plot_w
    }
}

/// A round tick step (1, 2 or 5 times a power of ten µs) giving about ten ticks.
fn tick_step(span_us: u64) -> u64 {
    let target = (span_us / 10).max(1);
    let mut power: u64 = 1;
    loop {
        for mult in [1, 2, 5] {
            let step = power.saturating_mul(mult);
            if step >= target {
                return step;
            }
        }
        match power.checked_mul(10) {
            Some(next) => power = next,
            None => return u64::MAX,
        }
    }
}

/// How many decimals of a second the tick labels need for this step.
fn tick_decimals(step_us: u64) -> usize {
    (0..6)
        .find(|&d| step_us.is_multiple_of(10u64.pow(6 - d as u32)))
        .unwrap_or(6)
}

/// `t` in seconds with `decimals` digits after the point, computed exactly.
fn tick_label(t_us: u64, decimals: usize) -> String {
    let whole = t_us / 1_000_000;
    if decimals == 0 {
        return whole.to_string();
    }
    let frac = (t_us % 1_000_000) / 10u64.pow(6 - decimals as u32);
    format!("{whole}.{frac:0decimals$}")
}

/// `t` in seconds with millisecond precision.
fn seconds(t_us: u64) -> String {
    tick_label(t_us, 3)
}

fn outcome_color(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Ok { .. } => COLOR_OK,
        Outcome::Indeterminate { .. } | Outcome::Unreadable { .. } => COLOR_INDETERMINATE,
        Outcome::Refused { .. } => COLOR_REFUSED,
        Outcome::NotSent { .. } => COLOR_NOT_SENT,
    }
}

/// The request's key fields.
fn request_fields(request: &Request) -> String {
    match request {
        Request::Attach {
            shard,
            node,
            generation_override,
        } => {
            let mut s = format!("shard {shard}");
            if let Some(node) = node {
                let _ = write!(s, ", node {node}");
            }
            if let Some(generation) = generation_override {
                let _ = write!(s, ", generation override {generation}");
            }
            s
        }
        Request::Migrate { shard, node } => format!("shard {shard}, node {node}"),
        Request::ReAttach { node } => format!("node {node}"),
        Request::Validate { tenants } => format!("{} tenant(s)", tenants.len()),
        Request::Inspect { shard } => format!("shard {shard}"),
    }
}

/// The outcome and, for a success, the answer.
fn outcome_text(outcome: &Outcome, max_chars: Option<usize>) -> String {
    let reason = |s: &str| match max_chars {
        Some(n) => clip(s, n),
        None => s.to_owned(),
    };
    match outcome {
        Outcome::Ok { answer } => format!("ok: {}", answer_text(answer)),
        Outcome::Refused { status, msg } => format!("refused {status}: {}", reason(msg)),
        Outcome::NotSent { reason: r } => format!("not applied: {}", reason(r)),
        Outcome::Indeterminate { reason: r } => format!("indeterminate: {}", reason(r)),
        Outcome::Unreadable { reason: r } => format!("unreadable: {}", reason(r)),
    }
}

fn answer_text(answer: &Answer) -> String {
    match answer {
        Answer::Generation {
            generation: Some(g),
        } => format!("generation {g}"),
        Answer::Generation { generation: None } => "detached".to_owned(),
        Answer::Migrated { generation } => format!("generation {generation}"),
        Answer::ReAttached { tenants } => format!("{} shard(s) re-attached", tenants.len()),
        Answer::Validated { tenants } => {
            let valid = tenants.iter().filter(|(_, ok)| *ok).count();
            format!("{valid} valid, {} stale", tenants.len() - valid)
        }
        Answer::Attachment {
            attachment: Some((g, node)),
        } => format!("generation {g} on node {node}"),
        Answer::Attachment { attachment: None } => "not attached".to_owned(),
    }
}

/// Everything about one op on one line: the tooltip and the list under the chart.
fn describe(op: &Op, max_reason_chars: Option<usize>) -> String {
    let mut s = format!(
        "op {} {} by {} via replica {}: {}; {}; call {} s, return {} s",
        op.id,
        op.request.name(),
        op.client,
        op.via,
        request_fields(&op.request),
        outcome_text(&op.outcome, max_reason_chars),
        seconds(op.call_us),
        seconds(op.return_us),
    );
    if op.return_us < op.call_us {
        s.push_str(" (return before call)");
    } else {
        let took = op.return_us - op.call_us;
        let _ = write!(s, " ({}.{:03} ms)", took / 1000, took % 1000);
    }
    s
}

/// `s` cut to `max` characters, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` with XML's special characters escaped, for text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageserver_controller::domain::{NodeId, TenantId, TenantShardId};

    fn shard() -> TenantShardId {
        TenantShardId::unsharded(TenantId::from_bytes([7; 16]))
    }

    fn op(id: u64, client: &str, call_us: u64, return_us: u64, outcome: Outcome) -> Op {
        Op {
            id,
            client: client.to_owned(),
            via: 1,
            call_us,
            return_us,
            request: Request::Attach {
                shard: shard(),
                node: Some(NodeId(2)),
                generation_override: None,
            },
            outcome,
        }
    }

    fn ok(generation: u32) -> Outcome {
        Outcome::Ok {
            answer: Answer::Generation {
                generation: Some(generation),
            },
        }
    }

    /// Checks that every element is closed in order; panics with the offending tag.
    fn assert_balanced(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let end = after.find('>').expect("every tag closes");
            let tag = &after[..end];
            rest = &after[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "closing </{name}>"
                );
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or_default();
                stack.push(name.to_owned());
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    /// The text of every `<title>` element.
    fn titles(svg: &str) -> Vec<&str> {
        svg.split("<title>")
            .skip(1)
            .filter_map(|s| s.split("</title>").next())
            .collect()
    }

    #[test]
    fn an_empty_history_renders_a_well_formed_svg() {
        let svg = render(&TimelineInput {
            ops: &[],
            faults: &[],
            highlight: &[],
            window_us: None,
            title: "empty".into(),
        });
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
        assert_balanced(&svg);
        assert!(titles(&svg).is_empty());
    }

    #[test]
    fn a_small_history_shows_lanes_faults_and_highlights() {
        let ops = [
            op(0, "operator", 100_000, 300_000, ok(1)),
            op(
                1,
                "pageserver-<1>",
                250_000,
                900_000,
                Outcome::Indeterminate {
                    reason: "timeout & \"lost\"".into(),
                },
            ),
            op(
                2,
                "operator",
                1_000_000,
                1_000_000,
                Outcome::Refused {
                    status: 409,
                    msg: "conflict".into(),
                },
            ),
            // Return before call must not panic.
            op(
                3,
                "operator",
                1_500_000,
                1_200_000,
                Outcome::NotSent {
                    reason: "refused".into(),
                },
            ),
        ];
        let faults = [FaultSpan {
            name: "kill-leader".into(),
            targets: vec![1],
            start_us: 200_000,
            healed_us: Some(700_000),
            healthy_us: Some(800_000),
        }];
        let input = TimelineInput {
            ops: &ops,
            faults: &faults,
            highlight: &[1],
            window_us: None,
            title: "run <42>".into(),
        };
        let svg = render(&input);
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_balanced(&svg);
        assert!(svg.contains(">operator<"));
        assert!(svg.contains("pageserver-&lt;1&gt;"));
        assert!(!svg.contains("pageserver-<1>"));
        assert!(svg.contains("kill-leader [1]"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains(&format!("stroke=\"{COLOR_HIGHLIGHT}\"")));
        assert!(svg.contains("run &lt;42&gt;"));
        assert!(svg.contains("timeout &amp; &quot;lost&quot;"));
        // The highlighted op's details are listed under the chart as a text line.
        assert!(svg.contains("Highlighted operations:"));
        let details = svg
            .split("<g id=\"details\">")
            .nth(1)
            .expect("details group");
        assert!(details.contains("op 1 attach by pageserver-&lt;1&gt; via replica 1"));
        assert!(details.contains("call 0.250 s, return 0.900 s (650.000 ms)"));
        // Every op is drawn with a tooltip.
        for id in 0..4 {
            let prefix = format!("op {id} ");
            assert!(
                titles(&svg).iter().any(|t| t.starts_with(&prefix)),
                "op {id}"
            );
        }
        // Deterministic.
        assert_eq!(svg, render(&input));
    }

    #[test]
    fn window_around_covers_the_highlighted_ops_and_needs_some() {
        let ops = [
            op(0, "a", 0, 1_000_000, ok(1)),
            op(1, "a", 10_000_000, 11_000_000, ok(2)),
            op(2, "b", 12_000_000, 12_500_000, ok(3)),
            op(3, "b", 30_000_000, 31_000_000, ok(4)),
        ];
        let (from, to) = window_around(&ops, &[1, 2], 3_000_000).expect("a window");
        assert_eq!((from, to), (7_000_000, 15_500_000));
        assert!(from <= ops[1].call_us && to >= ops[2].return_us);
        // Clamped to the history.
        assert_eq!(
            window_around(&ops, &[0, 3], 5_000_000),
            Some((0, 31_000_000))
        );
        assert_eq!(window_around(&ops, &[], 3_000_000), None);
        assert_eq!(window_around(&ops, &[99], 3_000_000), None);
        assert_eq!(window_around(&[], &[1], 3_000_000), None);
    }

    #[test]
    fn ops_outside_the_window_are_not_drawn() {
        let ops = [
            op(100, "a", 0, 1_000_000, ok(1)),
            op(200, "a", 10_000_000, 11_000_000, ok(2)),
            op(300, "b", 10_500_000, 12_000_000, ok(3)),
            op(400, "b", 50_000_000, 51_000_000, ok(4)),
        ];
        let window = window_around(&ops, &[200], 2_000_000);
        let svg = render(&TimelineInput {
            ops: &ops,
            faults: &[],
            highlight: &[200],
            window_us: window,
            title: "zoom".into(),
        });
        assert_balanced(&svg);
        let titles = titles(&svg);
        let drawn = |id: u64| {
            let prefix = format!("op {id} ");
            titles.iter().any(|t| t.starts_with(&prefix))
        };
        assert!(drawn(200) && drawn(300));
        assert!(!drawn(100) && !drawn(400));
    }

    #[test]
    fn a_huge_history_is_capped_with_a_note() {
        let ops: Vec<Op> = (0..MAX_OPS as u64 + 50)
            .map(|i| op(i, "c", i * 10, i * 10 + 5, ok(1)))
            .collect();
        let last = MAX_OPS as u64 + 49;
        let svg = render(&TimelineInput {
            ops: &ops,
            faults: &[],
            highlight: &[last],
            window_us: None,
            title: "big".into(),
        });
        assert_eq!(svg.matches("<title>op ").count(), MAX_OPS + 1);
        assert!(svg.contains("49 of 20050 operations in the window are left out"));
        assert!(svg.contains(&format!("<title>op {last} ")));
    }

    #[test]
    fn tick_labels_are_exact() {
        assert_eq!(tick_step(10_000_000), 1_000_000);
        assert_eq!(tick_decimals(1_000_000), 0);
        assert_eq!(tick_decimals(200_000), 1);
        assert_eq!(tick_label(1_200_000, 1), "1.2");
        assert_eq!(seconds(1_234_567), "1.234");
        assert_eq!(tick_step(0), 1);
    }
}
