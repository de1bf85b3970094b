//! A self-contained HTML page (inline SVG, no scripts) that draws a history as one timeline
//! per partition: a row per client, a bar per operation from call to return. When the check
//! failed, the bars of the longest linearizable prefix are green and numbered in their
//! linearization order, and the operations that could not follow it are red; hovering a bar
//! shows its description, times and (where kept) the state after it.
//!
//! The time axis is compressed: every distinct call or return time gets the same width, so
//! a burst of operations within one millisecond is as readable as a slow one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::checker::CheckResult;
use super::explain::{abbreviate, ms};
use super::model::{Model, Operation};

/// Width in pixels of one distinct timestamp on the compressed axis.
const STEP: usize = 14;
const LANE_HEIGHT: usize = 22;
const LEFT_MARGIN: usize = 90;
const AXIS_HEIGHT: usize = 24;

/// How an operation is drawn.
enum Role {
    /// Position in the linearizable prefix (from 1) and the state after it, if kept.
    Prefix(usize, Option<String>),
    /// One of the operations that could not follow the prefix.
    Stuck,
}

/// Writes an HTML visualisation of `history` and the verdict `result` to `path`.
///
/// The failing partition (or the one without a verdict) comes first. Works for any
/// verdict, including `Ok`.
pub fn write_html<M: Model>(
    history: &[Operation<M::Input, M::Output>],
    result: &CheckResult,
    path: &Path,
) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut partitions = M::partition_indices(history);
    let focus = match result {
        CheckResult::Ok => None,
        CheckResult::Illegal(v) => Some(v.partition.clone()),
        CheckResult::Unknown { partition, .. } => Some(partition.clone()),
    };
    // Stable: the focused partition first, the others in model order.
    partitions.sort_by_key(|p| Some(&p.label) != focus.as_ref());

    let mut roles: HashMap<usize, Role> = HashMap::new();
    if let CheckResult::Illegal(v) = result {
        for (i, step) in v.prefix.iter().enumerate() {
            roles.insert(step.op.index, Role::Prefix(i + 1, step.state_after.clone()));
        }
        for stuck in &v.stuck {
            roles.insert(stuck.op.index, Role::Stuck);
        }
    }

    let verdict = match result {
        CheckResult::Ok => "linearizable",
        CheckResult::Illegal(_) => "NOT linearizable",
        CheckResult::Unknown { .. } => "unknown (checker timeout)",
    };
    writeln!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>History: {verdict}</title>\n\
         <style>body{{font-family:sans-serif;margin:16px}} pre{{background:#f6f6f6;padding:8px;\
         overflow-x:auto}} .timeline{{overflow-x:auto;border:1px solid #ccc;margin-bottom:24px}} \
         text{{font-family:monospace;font-size:11px}}</style></head><body>"
    )?;
    writeln!(
        out,
        "<h1>History: {verdict}</h1>\n<p>{} operations in {} partitions. Legend: \
         <span style=\"background:#a8dca8\">linearizable prefix (numbered in order)</span> \
         <span style=\"background:#f4a6a6\">cannot follow the prefix</span> \
         <span style=\"background:#d5dde8\">other</span>. Hover a bar for details.</p>",
        history.len(),
        partitions.len()
    )?;
    writeln!(out, "<pre>{}</pre>", escape(&result.to_string()))?;

    for part in &partitions {
        let focused = Some(&part.label) == focus.as_ref();
        writeln!(
            out,
            "<h2>Partition '{}' ({} operations){}</h2>",
            escape(&part.label),
            part.ops.len(),
            if focused { " — see above" } else { "" }
        )?;
        write_timeline::<M>(&mut out, history, &part.ops, &roles)?;
    }
    writeln!(out, "</body></html>")?;
    out.flush()
}

fn write_timeline<M: Model>(
    out: &mut impl Write,
    history: &[Operation<M::Input, M::Output>],
    ops: &[usize],
    roles: &HashMap<usize, Role>,
) -> std::io::Result<()> {
    // Compressed axis: rank of each distinct time.
    let mut times: Vec<u64> = ops
        .iter()
        .flat_map(|&i| [history[i].call, history[i].return_time])
        .collect();
    times.sort_unstable();
    times.dedup();
    let rank = |t: u64| times.partition_point(|&x| x < t);
    let x_of = |t: u64| LEFT_MARGIN + rank(t) * STEP;

    // Lanes: one or more per client, so that bars in a lane never overlap.
    let mut by_client: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for &i in ops {
        by_client.entry(history[i].client_id).or_default().push(i);
    }
    let mut lanes: Vec<(u64, Vec<usize>)> = Vec::new();
    for (client, mut list) in by_client {
        list.sort_by_key(|&i| (history[i].call, history[i].return_time, i));
        let first_lane = lanes.len();
        for i in list {
            let free = lanes[first_lane..].iter_mut().find(|(_, lane)| {
                lane.last()
                    .is_none_or(|&j| history[j].return_time < history[i].call)
            });
            match free {
                Some((_, lane)) => lane.push(i),
                None => lanes.push((client, vec![i])),
            }
        }
    }

    let width = LEFT_MARGIN + times.len() * STEP + STEP;
    let height = AXIS_HEIGHT + lanes.len() * LANE_HEIGHT + 4;
    writeln!(
        out,
        "<div class=\"timeline\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" \
         height=\"{height}\">"
    )?;
    // Axis labels roughly every 120 px.
    let every = (120 / STEP).max(1);
    for (r, &t) in times.iter().enumerate().step_by(every) {
        let x = LEFT_MARGIN + r * STEP;
        writeln!(
            out,
            "<line x1=\"{x}\" y1=\"{AXIS_HEIGHT}\" x2=\"{x}\" y2=\"{height}\" stroke=\"#eee\"/>\
             <text x=\"{x}\" y=\"14\">{} ms</text>",
            ms(t)
        )?;
    }
    for (lane_no, (client, lane)) in lanes.iter().enumerate() {
        let y = AXIS_HEIGHT + lane_no * LANE_HEIGHT;
        writeln!(out, "<text x=\"4\" y=\"{}\">client {client}</text>", y + 15)?;
        for &i in lane {
            let op = &history[i];
            let x = x_of(op.call);
            let w = (x_of(op.return_time.max(op.call)) - x).max(STEP / 2);
            let description = M::describe_operation(&op.input, &op.output);
            let (fill, label, extra) = match roles.get(&i) {
                Some(Role::Prefix(n, state)) => (
                    "#a8dca8",
                    format!("{n}. {description}"),
                    state
                        .as_ref()
                        .map(|s| format!("\nstate after: {}", abbreviate(s, 300)))
                        .unwrap_or_default(),
                ),
                Some(Role::Stuck) => (
                    "#f4a6a6",
                    description.clone(),
                    "\ncannot follow the linearizable prefix".to_string(),
                ),
                None => ("#d5dde8", description.clone(), String::new()),
            };
            let tip = format!(
                "#{i} client {client} [{} ms, {} ms]\n{}{extra}",
                ms(op.call),
                ms(op.return_time),
                abbreviate(&description, 300)
            );
            let chars = w.saturating_sub(6) / 7;
            let shown = if chars >= 4 {
                abbreviate(&label, chars)
            } else {
                String::new()
            };
            writeln!(
                out,
                "<g><title>{}</title><rect x=\"{x}\" y=\"{}\" width=\"{w}\" height=\"{}\" \
                 rx=\"3\" fill=\"{fill}\" stroke=\"#667\"/><text x=\"{}\" y=\"{}\">{}</text></g>",
                escape(&tip),
                y + 2,
                LANE_HEIGHT - 4,
                x + 3,
                y + 15,
                escape(&shown)
            )?;
        }
    }
    writeln!(out, "</svg></div>")
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            _ => s.push(c),
        }
    }
    s
}
