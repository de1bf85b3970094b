//! The Prometheus text exposition format (version 0.0.4), written by hand: a `# HELP` and a
//! `# TYPE` line per family, then one line per sample, `name{label="value",...} number`.
//! Label values are quoted and escaped (`\\`, `\"`, `\n`), help texts escaped (`\\`, `\n`);
//! a histogram is its cumulative `_bucket` lines (each `le` counts every observation at or
//! below it, `+Inf` all of them), then `_sum` and `_count`.

use std::fmt::Write;

use super::HistogramSnapshot;

/// What kind of family a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (reset by a restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into fixed buckets, with their sum and count.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A page of metrics being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the family `name`: its help and type lines. Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram of the current family (`name` without a suffix).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h.bounds.get(i).map_or("+Inf".to_string(), |&b| number(b));
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(h.sum));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// `{a="x",b="y"}` (with `le` last if given), or nothing without labels.
fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (name, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{name}=\"{}\"", escape_label(value));
    }
    out.push('}');
}

/// A label value as the format wants it between quotes.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A help text as the format wants it (quotes stay as they are there).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: integers without a fraction, infinities and NaN as the format spells them.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Histogram;
    use std::time::Duration;

    #[test]
    fn families_have_help_and_type_lines_and_labels_are_quoted_and_escaped() {
        let mut page = Exposition::new();
        page.family("rainkv_x_total", Kind::Counter, "Things.\nWith a \\ in it.");
        page.sample(
            "rainkv_x_total",
            &[("a", "plain"), ("b", "q\"b\\s\nn")],
            3.0,
        );
        page.single("rainkv_y", Kind::Gauge, "A gauge.", -1.0);
        assert_eq!(
            page.finish(),
            "# HELP rainkv_x_total Things.\\nWith a \\\\ in it.\n\
             # TYPE rainkv_x_total counter\n\
             rainkv_x_total{a=\"plain\",b=\"q\\\"b\\\\s\\nn\"} 3\n\
             # HELP rainkv_y A gauge.\n\
             # TYPE rainkv_y gauge\n\
             rainkv_y -1\n"
        );
    }

    #[test]
    fn numbers_are_written_as_the_format_reads_them() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(12345.0), "12345");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(0.0005), "0.0005");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_sum_and_count() {
        let h = Histogram::new(&[0.001, 0.01, 0.1]);
        for micros in [500, 700, 5_000, 50_000, 2_000_000] {
            h.observe(Duration::from_micros(micros));
        }
        let mut page = Exposition::new();
        page.family("rainkv_t_seconds", Kind::Histogram, "Time.");
        page.histogram("rainkv_t_seconds", &[("m", "Get")], &h.snapshot());
        let text = page.finish();
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "rainkv_t_seconds_bucket{m=\"Get\",le=\"0.001\"} 2",
                "rainkv_t_seconds_bucket{m=\"Get\",le=\"0.01\"} 3",
                "rainkv_t_seconds_bucket{m=\"Get\",le=\"0.1\"} 4",
                "rainkv_t_seconds_bucket{m=\"Get\",le=\"+Inf\"} 5",
                "rainkv_t_seconds_sum{m=\"Get\"} 2.0562",
                "rainkv_t_seconds_count{m=\"Get\"} 5",
            ]
        );
    }

    #[test]
    fn an_observation_on_a_bound_falls_in_that_bucket() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(10));
        assert_eq!(h.snapshot().counts, [1, 1, 0]);
    }

    #[test]
    fn an_empty_histogram_still_has_every_bucket() {
        let h = Histogram::new(&[0.5]);
        let mut page = Exposition::new();
        page.histogram("h", &[], &h.snapshot());
        assert_eq!(
            page.finish(),
            "h_bucket{le=\"0.5\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"
        );
    }
}
