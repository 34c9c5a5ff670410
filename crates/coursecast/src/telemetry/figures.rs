//! The dashboard's figures, read back from the same Prometheus recorder that serves
//! `/metrics`: one set of counters, so the page and the scraper cannot disagree.
//! Parses the text exposition format the recorder renders (`name{a="b"} value`).

use std::collections::BTreeMap;

/// One sample line of the exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The recorder's current samples.
#[derive(Debug, Default)]
pub struct Snapshot {
    samples: Vec<Sample>,
}

impl Snapshot {
    /// The figures as `/metrics` would show them now.
    pub fn now() -> Self {
        Self::parse(&super::metrics::handle().render())
    }

    pub fn parse(text: &str) -> Self {
        let samples = text.lines().filter(|line| !line.starts_with('#')).filter_map(parse_line).collect();
        Self { samples }
    }

    /// The sum of every series of `name` whose labels include `with` (all if empty).
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.matching(name, with).fold(0.0, |total, s| total + s.value)
    }

    /// [`Self::sum`] of a counter, as the whole number it is.
    pub fn count(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        whole(self.sum(name, with))
    }

    /// The totals of counter `name` per value of `label`.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for sample in self.matching(name, &[]) {
            if let Some((_, value)) = sample.labels.iter().find(|(k, _)| k == label) {
                *out.entry(value.clone()).or_insert(0) += whole(sample.value);
            }
        }
        out
    }

    fn matching<'a>(&'a self, name: &'a str, with: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name && with.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }
}

fn whole(value: f64) -> u64 {
    value.max(0.0).round() as u64
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

/// `a="x",b="y"`; values are ours (bounded label sets), so no escaped quotes occur,
/// but an escaped one is kept rather than splitting the value.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        labels.push((key.trim_start_matches(',').to_owned(), after[..end].to_owned()));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_exposition_format() {
        let text = "# TYPE coursecast_x_total counter\n\
                    coursecast_x_total{code=\"FORBIDDEN\",namespace=\"/chat\"} 3\n\
                    coursecast_x_total{code=\"NOT_FOUND\",namespace=\"/chat\"} 2\n\
                    coursecast_x_total{code=\"FORBIDDEN\",namespace=\"/collaboration\"} 1\n\
                    coursecast_up 1\n\
                    coursecast_h_seconds_sum{op=\"a\"} 0.5\n";
        let snapshot = Snapshot::parse(text);
        assert_eq!(snapshot.count("coursecast_x_total", &[]), 6);
        assert_eq!(snapshot.count("coursecast_x_total", &[("code", "FORBIDDEN")]), 4);
        assert_eq!(
            snapshot.by("coursecast_x_total", "code"),
            BTreeMap::from([("FORBIDDEN".to_owned(), 4), ("NOT_FOUND".to_owned(), 2)])
        );
        assert_eq!(snapshot.count("coursecast_missing_total", &[]), 0);
        assert!(snapshot.sum("coursecast_missing_total", &[]).is_sign_positive());
        assert_eq!(snapshot.sum("coursecast_up", &[]), 1.0);
        assert_eq!(snapshot.sum("coursecast_h_seconds_sum", &[("op", "a")]), 0.5);
    }
}
