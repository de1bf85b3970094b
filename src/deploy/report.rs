//! The page `rainkv bench --scale --report` writes: one self-contained HTML file with the
//! [`ScaleReport`]'s plots as inline SVG (drawn with `plotters`' SVG backend: text is left to
//! the browser's fonts) and its figures in tables.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::scale::{Measured, ScaleReport, KEY_SWEEP_VALUE_BYTES};
use super::stats::millis;

/// One line of a plot: its legend, its colour (an index into [`COLOURS`]) and its points.
type Series = (String, usize, Vec<(f64, f64)>);

/// The lines' colours: RainKV's put and get, then etcd's, the same in every plot.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
];

/// A log-scale range around `values` (positive ones), padded a little; `1..10` if none.
fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 1.0..10.0;
    }
    (lo / 1.5)..(hi * 1.5)
}

/// A tick label: `250`, `0.35`, `4k`, `1.5M`.
fn tick(v: f64) -> String {
    let (v, unit) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = format!("{v:.3}");
    let digits = digits.trim_end_matches('0').trim_end_matches('.');
    format!("{digits}{unit}")
}

/// A log-log line plot titled `title` with axes `x_desc` and `y_desc`, as SVG.
fn plot(title: &str, (x_desc, y_desc): (&str, &str), series: &[Series]) -> Result<String, String> {
    let points = || series.iter().flat_map(|(_, _, p)| p.iter());
    let xs = range(points().map(|p| p.0));
    let ys = range(points().map(|p| p.1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(xs.log_scale(), ys.log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, colour, points) in series {
            let colour = COLOURS[colour % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| e.to_string())?;
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Escapes `&`, `<`, `>` and `"` for HTML text and attributes.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A measured line: its name, colour and points.
type MeasuredLine = (&'static str, usize, Vec<(f64, Measured)>);

/// The throughput series and the p99 series (in ms) of RainKV's `lines`, and of etcd's
/// `lines` that have points (none when etcd was not measured).
fn throughput_and_p99<const R: usize, const E: usize>(
    rainkv: [MeasuredLine; R],
    etcd: [MeasuredLine; E],
) -> (Vec<Series>, Vec<Series>) {
    let etcd = etcd.into_iter().filter(|(_, _, points)| !points.is_empty());
    rainkv
        .into_iter()
        .chain(etcd)
        .map(|(name, colour, points)| {
            let (ops, p99) = points
                .iter()
                .map(|&(x, m)| ((x, m.ops_per_s), (x, millis(m.p99))))
                .unzip();
            (
                (name.to_string(), colour, ops),
                (name.to_string(), colour, p99),
            )
        })
        .unzip()
}

/// The plots of `report`, each with its title and a sentence on what it shows.
fn figures(report: &ScaleReport) -> Result<Vec<(String, String)>, String> {
    let etcd_note = match &report.etcd_absent {
        None => "etcd 3.4 (3 members, fsync on) measured by its load generator at the same points."
            .to_string(),
        Some(why) => format!("No etcd line: {why}."),
    };
    let c = &report.clients;
    let x = |n: usize| n as f64;
    let (throughput_clients, p99_clients) = throughput_and_p99(
        [
            (
                "RainKV put",
                0,
                c.iter().map(|p| (x(p.clients), p.put)).collect(),
            ),
            (
                "RainKV get",
                1,
                c.iter().map(|p| (x(p.clients), p.get)).collect(),
            ),
        ],
        [
            (
                "etcd put",
                2,
                c.iter()
                    .filter_map(|p| Some((x(p.clients), p.etcd?.0)))
                    .collect(),
            ),
            (
                "etcd get",
                3,
                c.iter()
                    .filter_map(|p| Some((x(p.clients), p.etcd?.1)))
                    .collect(),
            ),
        ],
    );
    let (value_clients, v) = &report.values;
    let (throughput_values, p99_values) = throughput_and_p99(
        [(
            "RainKV put",
            0,
            v.iter().map(|p| (x(p.value_bytes), p.put)).collect(),
        )],
        [(
            "etcd put",
            2,
            v.iter()
                .filter_map(|p| Some((x(p.value_bytes), p.etcd?)))
                .collect(),
        )],
    );
    let k = &report.keys;
    let memory: Vec<Series> = vec![(
        "RSS growth / key (3 replicas)".into(),
        0,
        k.iter()
            .filter_map(|p| Some((x(p.keys), p.rss_per_key?)))
            .collect(),
    )];
    let snapshots: Vec<Series> = vec![
        (
            "encode".into(),
            0,
            report
                .snapshots
                .iter()
                .map(|(keys, s)| (x(*keys), s.encode.as_secs_f64()))
                .collect(),
        ),
        (
            "write (save with fsync)".into(),
            1,
            report
                .snapshots
                .iter()
                .filter_map(|(keys, s)| Some((x(*keys), s.save?.as_secs_f64())))
                .collect(),
        ),
    ];
    let recovery: Vec<Series> = vec![
        (
            "restart from its data directory".into(),
            0,
            k.iter()
                .filter_map(|p| Some((x(p.keys), p.restart.as_ref().ok()?.as_secs_f64())))
                .collect(),
        ),
        (
            "catch-up of a new learner from empty".into(),
            1,
            k.iter()
                .filter_map(|p| Some((x(p.keys), p.catch_up.as_ref().ok()?.as_secs_f64())))
                .collect(),
        ),
    ];
    let per_value = format!("{value_clients} clients, puts");
    Ok(vec![
        (
            plot("Throughput vs clients", ("clients", "ops/s"), &throughput_clients)?,
            format!("Puts and linearizable gets of 128 B values over 10 000 keys, each client with one request in flight. {etcd_note}"),
        ),
        (
            plot("p99 latency vs clients", ("clients", "p99 latency (ms)"), &p99_clients)?,
            format!("The same runs' 99th percentile latency. {etcd_note}"),
        ),
        (
            plot("Throughput vs value size", ("value size (bytes)", "ops/s"), &throughput_values)?,
            format!("{per_value}; big values run fewer operations over fewer keys. {etcd_note}"),
        ),
        (
            plot("p99 latency vs value size", ("value size (bytes)", "p99 latency (ms)"), &p99_values)?,
            format!("The same runs' 99th percentile latency. {etcd_note}"),
        ),
        (
            plot("Memory per key vs keys", ("keys", "bytes per key"), &memory)?,
            format!("Growth of this process's resident memory (three replicas and the client) since the empty cluster started, divided by the keys loaded ({KEY_SWEEP_VALUE_BYTES} B values, 16 B keys). No etcd line: not measured for etcd."),
        ),
        (
            plot("Snapshot time vs keys", ("keys in the snapshot (about)", "seconds"), &snapshots)?,
            "Every snapshot the leader took while keys were loaded: encoding the whole state on the applying thread, then the save that wrote it. No etcd line: not measured for etcd.".to_string(),
        ),
        (
            plot("Restart and catch-up time vs keys", ("keys", "seconds"), &recovery)?,
            "A follower killed and restarted from its data directory, until it serves with everything committed before it was applied; and a new node started from an empty directory and added as a learner, until it has applied everything committed when it started. No etcd line: not measured for etcd.".to_string(),
        ),
    ])
}

/// The machine: CPU model and cores.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// The report as one HTML page; `lines` are the figures' text lines, shown at the end.
pub fn html(report: &ScaleReport, lines: &[String]) -> Result<String, String> {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>RainKV: how cost grows</title>\n<style>\
         body{font-family:sans-serif;max-width:1320px;margin:1em auto;padding:0 1em}\
         figure{display:inline-block;margin:.5em;vertical-align:top;width:640px}\
         figcaption{font-size:.9em;color:#333}pre{font-size:.8em;overflow-x:auto}\
         </style>\n</head>\n<body>\n<h1>RainKV: how cost grows</h1>\n",
    );
    let _ = writeln!(
        page,
        "<p>Three RainKV nodes on loopback in one process (real TCP, a data directory each, fsync on), on {}.</p>",
        escape(&machine())
    );
    match &report.etcd_absent {
        None => page.push_str("<p>etcd lines: etcd 3.4, 3 members on loopback, fsync on, driven by <code>benches/etcd/loadgen</code>.</p>\n"),
        Some(why) => {
            let _ = writeln!(page, "<p class=\"etcd-absent\">The etcd lines are absent: {}.</p>", escape(why));
        }
    }
    for (svg, caption) in figures(report)? {
        let _ = writeln!(
            page,
            "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
            escape(&caption)
        );
    }
    page.push_str("<h2>Figures</h2>\n<pre>\n");
    for line in lines {
        page.push_str(&escape(line));
        page.push('\n');
    }
    page.push_str("</pre>\n</body>\n</html>\n");
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::scale::{ClientsPoint, Measured, ValuePoint};
    use std::time::Duration;

    fn measured(ops_per_s: f64, p99_ms: u64) -> Measured {
        Measured {
            ops_per_s,
            p99: Duration::from_millis(p99_ms),
        }
    }

    fn report(with_etcd: bool) -> ScaleReport {
        let etcd = |n: f64| with_etcd.then(|| measured(n / 2.0, 9));
        ScaleReport {
            clients: [1, 16, 256]
                .into_iter()
                .map(|clients| ClientsPoint {
                    clients,
                    put: measured(100.0 * clients as f64, 2),
                    get: measured(300.0 * clients as f64, 1),
                    etcd: etcd(1.0).zip(etcd(3.0)),
                })
                .collect(),
            values: (
                16,
                [16, 65536]
                    .into_iter()
                    .map(|value_bytes| ValuePoint {
                        value_bytes,
                        put: measured(1000.0, 5),
                        etcd: etcd(1000.0),
                    })
                    .collect(),
            ),
            keys: Vec::new(),
            snapshots: Vec::new(),
            etcd_absent: (!with_etcd).then(|| "not installed".to_string()),
        }
    }

    #[test]
    fn the_etcd_lines_are_drawn_only_when_etcd_was_measured() {
        let with = html(&report(true), &[]).expect("page");
        let without = html(&report(false), &[]).expect("page");
        // Clients: put and get, throughput and p99; values: put, throughput and p99.
        assert_eq!(with.matches("etcd put").count(), 4, "{with}");
        assert_eq!(with.matches("etcd get").count(), 2);
        assert_eq!(with.matches("RainKV put").count(), 4);
        assert_eq!(without.matches("RainKV put").count(), 4);
        assert_eq!(without.matches("etcd put").count(), 0);
        assert_eq!(without.matches("etcd get").count(), 0);
        assert!(without.contains("No etcd line: not installed."));
    }
}
