//! The Prometheus text exposition format (0.0.4), written by hand for the agent's and the
//! server's metrics: metric families, samples with escaped labels, and histograms.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Observations counted into fixed upper bounds, as Prometheus histograms are. Observing
/// takes `&self` and no lock: a few atomic additions, so the server can time every
/// request without a shared mutex.
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket: above the previous bound and at or below this one; the
    /// last entry counts those above every bound. Made cumulative when exposed.
    buckets: Box<[AtomicU64]>,
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    /// The cumulative count at each bound, then the total count.
    fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().scan(0, |total, bucket| {
            *total += bucket.load(Ordering::Relaxed);
            Some(*total)
        })
    }

    fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
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
        let les = histogram.bounds.iter().map(|bound| bound_text(*bound));
        let les = les.chain(std::iter::once("+Inf".to_string()));
        let mut count = 0;
        for (le, cumulative) in les.zip(histogram.cumulative()) {
            let _ = writeln!(
                self.text,
                "{name}_bucket{} {cumulative}",
                label_set(labels, Some(&le))
            );
            count = cumulative;
        }
        let _ = writeln!(
            self.text,
            "{name}_sum{} {}",
            label_set(labels, None),
            histogram.sum()
        );
        let _ = writeln!(self.text, "{name}_count{} {count}", label_set(labels, None));
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
        let histogram = Histogram::new(BOUNDS);
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
