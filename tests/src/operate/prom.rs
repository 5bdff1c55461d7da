//! A strict reader of the Prometheus text exposition format (version 0.0.4),
//! for asserting on what `/metrics` serves.
//!
//! Strict on purpose: a scrape that Prometheus would reject must fail the
//! test, so every line is either a well-formed `# HELP` / `# TYPE` comment
//! or a sample `name{label="value",…} value [timestamp]`; a sample's family
//! must have been typed before it; a series may appear once; and every
//! histogram must be coherent (cumulative buckets, `+Inf` = `_count`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Family name → counter, gauge, histogram, summary or untyped.
    pub types: HashMap<String, String>,
    pub help: HashMap<String, String>,
}

/// Where and why the text is not valid exposition format.
#[derive(Debug)]
pub struct ParseError {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line, self.reason, self.text)
    }
}

impl std::error::Error for ParseError {}

const TYPES: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return Some(base);
            }
        }
    }
    None
}

/// `{a="x",b="y"}` (braces included) → labels; the rest of the line after it.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = rest[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label value")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name:?} given twice"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// Parses and checks a whole scrape.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::default();
    let mut seen: HashMap<(String, BTreeMap<String, String>), ()> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let fail = |reason: String| ParseError {
            line: i + 1,
            text: line.to_owned(),
            reason,
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) || !TYPES.contains(&kind.trim()) {
                        return Err(fail("bad TYPE line".into()));
                    }
                    if scrape.samples.iter().any(|s| s.name == name) {
                        return Err(fail("TYPE after the family's samples".into()));
                    }
                    if scrape
                        .types
                        .insert(name.to_owned(), kind.trim().to_owned())
                        .is_some()
                    {
                        return Err(fail("second TYPE for one family".into()));
                    }
                }
                (Some("HELP"), Some(name), help) => {
                    if !is_metric_name(name) {
                        return Err(fail("bad HELP line".into()));
                    }
                    scrape
                        .help
                        .insert(name.to_owned(), help.unwrap_or("").to_owned());
                }
                _ => {} // any other comment is allowed
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| fail("missing or bad value".into()))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| fail("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(fail("trailing text".into()));
        }
        if family_of(name, &scrape.types).is_none() {
            return Err(fail(format!("sample of {name:?} before its # TYPE")));
        }
        if seen.insert((name.to_owned(), labels.clone()), ()).is_some() {
            return Err(fail("duplicate series".into()));
        }
        scrape.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    scrape.check_histograms().map_err(|reason| ParseError {
        line: 0,
        text: String::new(),
        reason,
    })?;
    Ok(scrape)
}

impl Scrape {
    /// The sample of `name` whose labels are exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`Self::get`], 0 when the series does not exist (yet): a labelled
    /// counter appears at its first increment.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The `_count` of histogram `name` for `labels`.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(&format!("{name}_count"), labels)
    }

    /// Every sample of the family `name` (histogram parts included).
    pub fn family<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| family_of(&s.name, &self.types) == Some(name))
    }

    /// Buckets cumulative, `+Inf` present and equal to `_count`, `_sum` present.
    fn check_histograms(&self) -> Result<(), String> {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let bucket = format!("{family}_bucket");
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| s.name == bucket) {
                let mut labels = s.labels.clone();
                let le = labels
                    .remove("le")
                    .ok_or_else(|| format!("{bucket} without le"))?;
                let le = parse_value(&le).ok_or_else(|| format!("{bucket}: bad le {le:?}"))?;
                series.entry(labels).or_default().push((le, s.value));
            }
            for (labels, mut buckets) in series {
                let pairs: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!("{family}{labels:?}: buckets are not cumulative"));
                }
                let inf = buckets
                    .last()
                    .filter(|b| b.0 == f64::INFINITY)
                    .ok_or_else(|| format!("{family}{labels:?}: no +Inf bucket"))?;
                let count = self
                    .get(&format!("{family}_count"), &pairs)
                    .ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
                if inf.1 != count {
                    return Err(format!(
                        "{family}{labels:?}: +Inf bucket {} != _count {count}",
                        inf.1
                    ));
                }
                if self.get(&format!("{family}_sum"), &pairs).is_none() {
                    return Err(format!("{family}{labels:?}: no _sum"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_families_labels_and_histograms() {
        let text = "# HELP c_total A counter\n# TYPE c_total counter\nc_total{rule=\"a\\\"b\"} 3\n\
                    # TYPE h histogram\nh_bucket{path=\"hit\",le=\"0.1\"} 1\nh_bucket{path=\"hit\",le=\"+Inf\"} 2\n\
                    h_sum{path=\"hit\"} 0.3\nh_count{path=\"hit\"} 2\n";
        let s = parse(text).unwrap();
        assert_eq!(s.value("c_total", &[("rule", "a\"b")]), 3.0);
        assert_eq!(s.count("h", &[("path", "hit")]), 2.0);
        assert_eq!(s.family("h").count(), 4);
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [
            "c 1\n",                                    // no TYPE
            "# TYPE c counter\nc{a=b} 1\n",             // unquoted
            "# TYPE c counter\nc 1\nc 2\n",             // duplicate series
            "# TYPE c counter\nc one\n",                // bad value
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
