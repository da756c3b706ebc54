//! [`Exposition`]: a small writer of the Prometheus text format, version 0.0.4.
//!
//! Each metric family gets exactly one `# HELP` and one `# TYPE` line followed by its samples
//! (`name{label="value"} number`). Help text and label values are escaped as the format
//! requires (`\\`, `\n`, and `\"` in label values).

use std::fmt::Write as _;

use super::histogram::HistogramSnapshot;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Accumulates metric families into one text document.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.text
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, label_value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(label_value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A counter without labels. `name` should end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], value);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "gauge");
        self.sample(name, &[], value);
    }

    /// A counter family with one label, one sample per `(label value, count)`.
    pub fn counter_family(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.header(name, help, "counter");
        for (label_value, value) in values {
            self.sample(name, &[(label, label_value)], value);
        }
    }

    /// A gauge family with one label, one sample per `(label value, value)`.
    pub fn gauge_family(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.header(name, help, "gauge");
        for (label_value, value) in values {
            self.sample(name, &[(label, label_value)], value);
        }
    }

    /// A histogram: cumulative `_bucket{le=...}` samples ending with `+Inf`, then `_sum` and
    /// `_count`. `name` should end in the unit (`_seconds`).
    pub fn histogram(&mut self, name: &str, help: &str, snapshot: &HistogramSnapshot) {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (le, count) in &snapshot.buckets {
            self.sample(&bucket, &[("le", le)], count);
        }
        self.sample(&bucket, &[("le", "+Inf")], snapshot.count);
        self.sample(&format!("{name}_sum"), &[], snapshot.sum_seconds);
        self.sample(&format!("{name}_count"), &[], snapshot.count);
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::metrics::histogram::Histogram;

    /// One parsed sample line.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct Sample {
        pub(crate) name: String,
        pub(crate) labels: Vec<(String, String)>,
        pub(crate) value: f64,
    }

    /// Parses an exposition strictly: every line is `# HELP name text`, `# TYPE name kind`
    /// or `name{label="value",...} number`; every sample's family was declared by a TYPE line
    /// before it; no family is declared twice.
    pub(crate) fn parse(text: &str) -> Result<Vec<Sample>, String> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        if !text.ends_with('\n') {
            return Err("the document must end with a newline".into());
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _help) = rest.split_once(' ').ok_or(format!("bad HELP: {line}"))?;
                check_name(name)?;
                if !helps.insert(name.to_owned()) {
                    return Err(format!("HELP twice for {name}"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
                check_name(name)?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(format!("bad type {kind}"));
                }
                if !helps.contains(name) {
                    return Err(format!("TYPE before HELP for {name}"));
                }
                if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                    return Err(format!("TYPE twice for {name}"));
                }
            } else if line.starts_with('#') {
                return Err(format!("unexpected comment: {line}"));
            } else {
                let sample = parse_sample(line)?;
                let family = family_of(&sample.name, &types)
                    .ok_or(format!("sample without TYPE: {line}"))?;
                if types.get(family).map(String::as_str) == Some("counter")
                    && !family.ends_with("_total")
                {
                    return Err(format!("counter {family} lacks _total"));
                }
                samples.push(sample);
            }
        }
        Ok(samples)
    }

    fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
        if types.contains_key(name) {
            return Some(name);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
        })
    }

    fn check_name(name: &str) -> Result<(), String> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            Ok(())
        } else {
            Err(format!("bad metric name {name:?}"))
        }
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let (head, value) = line.rsplit_once(' ').ok_or(format!("bad sample: {line}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().map_err(|_| format!("bad value in {line}"))?,
        };
        let (name, labels) = match head.split_once('{') {
            None => (head, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line}"))?;
                (name, parse_labels(body)?)
            }
        };
        check_name(name)?;
        Ok(Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    fn parse_labels(body: &str) -> Result<Vec<(String, String)>, String> {
        let mut labels = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (label, after) = rest
                .split_once("=\"")
                .ok_or(format!("bad labels: {body}"))?;
            check_name(label)?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                        _ => return Err(format!("bad escape in {body}")),
                    },
                    Some((index, '"')) => break index,
                    Some((_, other)) => value.push(other),
                    None => return Err(format!("unterminated label value in {body}")),
                }
            };
            labels.push((label.to_owned(), value));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        Ok(labels)
    }

    #[test]
    fn renders_every_kind_and_parses_back() {
        let histogram = Histogram::default();
        histogram.observe(std::time::Duration::from_millis(3));
        let mut exposition = Exposition::new();
        exposition.counter("a_total", "A counter.", 7);
        exposition.gauge("b", "A gauge with a \\ and a\nnewline.", 3);
        exposition.gauge_family(
            "c",
            "Labelled.",
            "transport",
            &[("ws", 1), ("s\"s\\e\n", 2)],
        );
        exposition.histogram("d_seconds", "Latency.", &histogram.snapshot());
        let text = exposition.finish();
        let samples = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert!(text.contains("# HELP b A gauge with a \\\\ and a\\nnewline.\n"));
        let find = |name: &str, labels: &[(&str, &str)]| {
            samples
                .iter()
                .find(|sample| {
                    sample.name == name
                        && sample.labels.len() == labels.len()
                        && labels.iter().all(|(label, value)| {
                            sample.labels.iter().any(|(l, v)| l == label && v == value)
                        })
                })
                .map(|sample| sample.value)
        };
        assert_eq!(find("a_total", &[]), Some(7.0));
        assert_eq!(find("c", &[("transport", "s\"s\\e\n")]), Some(2.0));
        assert_eq!(find("d_seconds_bucket", &[("le", "0.0025")]), Some(0.0));
        assert_eq!(find("d_seconds_bucket", &[("le", "0.005")]), Some(1.0));
        assert_eq!(find("d_seconds_bucket", &[("le", "+Inf")]), Some(1.0));
        assert_eq!(find("d_seconds_count", &[]), Some(1.0));
        let sum = find("d_seconds_sum", &[]).expect("sum present");
        assert!((sum - 0.003).abs() < 1e-9);
    }

    #[test]
    fn the_parser_rejects_malformed_lines() {
        assert!(parse("x 1\n").is_err(), "sample without TYPE");
        assert!(parse("# HELP x y\n# TYPE x gauge\nx{a=\"1} 2\n").is_err());
        assert!(
            parse("# HELP x y\n# TYPE x counter\nx 1\n").is_err(),
            "counter without _total"
        );
        assert!(parse("# HELP x y\n# TYPE x gauge\nx one\n").is_err());
        assert!(
            parse("# HELP x y\n# TYPE x gauge\nx 1").is_err(),
            "no final newline"
        );
    }
}
