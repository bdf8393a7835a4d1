//! The Prometheus text exposition format (0.0.4), written by hand for the agent's and the
//! server's metrics: metric families, samples with escaped labels, and histograms.

use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Observations counted into fixed upper bounds, as Prometheus histograms are.
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (cumulative, as exposed).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// One scrape's text, built family by family.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

/// Label names and values of one sample.
pub type Labels<'a> = [(&'a str, &'a str)];

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &Labels, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{name}{} {value}", label_set(labels, None));
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram.
    pub fn histogram(&mut self, name: &str, labels: &Labels, histogram: &Histogram) {
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            let le = bound_text(*bound);
            let _ = writeln!(
                self.text,
                "{name}_bucket{} {count}",
                label_set(labels, Some(&le))
            );
        }
        let _ = writeln!(
            self.text,
            "{name}_bucket{} {}",
            label_set(labels, Some("+Inf")),
            histogram.count
        );
        let _ = writeln!(
            self.text,
            "{name}_sum{} {}",
            label_set(labels, None),
            histogram.sum
        );
        let _ = writeln!(
            self.text,
            "{name}_count{} {}",
            label_set(labels, None),
            histogram.count
        );
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// `{a="1",b="2"}`, with `le` last when given; nothing at all for no labels.
fn label_set(labels: &Labels, le: Option<&str>) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Bounds as Python's prometheus_client writes them (`60.0`, `0.005`), which the
/// reference agent's dashboards match on.
fn bound_text(bound: f64) -> String {
    if bound.fract() == 0.0 {
        format!("{bound:.1}")
    } else {
        bound.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        const BOUNDS: &[f64] = &[0.5, 1.0];
        let mut histogram = Histogram::new(BOUNDS);
        histogram.observe(0.25);
        histogram.observe(0.75);
        histogram.observe(3.0);
        let mut out = Exposition::default();
        out.family("t_seconds", "histogram", "A test");
        out.histogram("t_seconds", &[("queue", "a\"b")], &histogram);
        out.sample("up", &[], 1);
        assert_eq!(
            out.finish(),
            "# HELP t_seconds A test\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{queue=\"a\\\"b\",le=\"0.5\"} 1\n\
             t_seconds_bucket{queue=\"a\\\"b\",le=\"1.0\"} 2\n\
             t_seconds_bucket{queue=\"a\\\"b\",le=\"+Inf\"} 3\n\
             t_seconds_sum{queue=\"a\\\"b\"} 4\n\
             t_seconds_count{queue=\"a\\\"b\"} 3\n\
             up 1\n"
        );
    }
}
