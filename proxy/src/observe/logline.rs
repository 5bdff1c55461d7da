//! One line of the slow-query log: a JSON object written straight into the
//! log's buffer.
//!
//! The field names and their order are part of the contract:
//! `ts`, `duration_ms`, `upstream_ms`, `pool_wait_ms`, `fingerprint`,
//! `query`, `rows`, `cache`, `rule`, `user`, `database`,
//! `application_name`, `client`.
//!
//! # Performance
//! With `slow_query_ms = 0` every query is a line, so a line must cost far
//! less than a query. A line through `serde_json` and `Display` cost ~9,400
//! instructions (callgrind), half of a forwarded query; most of it was
//! escaping the same strings again and formatting the same fingerprint
//! again. Here the parts that repeat are escaped once and kept: the shape's
//! fingerprint and normalized text (per analysis, [`ShapeFragments`]), the session's
//! user, database, application name and address (per session, in
//! [`SessionInfo`](super::event::SessionInfo)) and the timestamp up to its
//! second ([`Clock`]). What is
//! left per line is copying those and writing a few numbers.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgstash_rules::{Analysis, FingerprintHashing};

use super::event::QueryEvent;
use super::json::{into_text, push_str};
use super::nplusone::Burst;

/// A shape's `"fingerprint":"…","query":"…",`, kept per analysis.
struct ShapeJson {
    /// Keeps the analysis' allocation (not its contents) so that its
    /// address, the key, is not reused while the entry lives.
    _analysis: Weak<Analysis>,
    json: Box<str>,
}

/// Above this many shapes the kept fragments start over.
const SHAPES_MAX: usize = 10_000;

/// Normalized texts longer than this are escaped per line, not kept
/// (bounds the memo at `SHAPES_MAX` × this; long texts are rarely repeated).
const KEPT_TEXT_MAX: usize = 2048;

/// Escaped fragments of the shapes seen, by analysis object: the recorder
/// finds one object per repeated shape (texts it does not keep get a new
/// object each time, and are mostly long ones, which are not kept here).
/// The address is hashed with the same keyed multiply as fingerprints:
/// SipHash was a tenth of a line's cost.
#[derive(Default)]
pub struct ShapeFragments(HashMap<usize, ShapeJson, FingerprintHashing>);

impl ShapeFragments {
    /// Writes `"fingerprint":"…","query":"…",` for `analysis`.
    fn push(&mut self, out: &mut Vec<u8>, analysis: &Arc<Analysis>) {
        if analysis.normalized.len() > KEPT_TEXT_MAX {
            push_shape(out, analysis);
            return;
        }
        if self.0.len() >= SHAPES_MAX {
            self.0.clear();
        }
        let key = Arc::as_ptr(analysis) as usize;
        let shape = self.0.entry(key).or_insert_with(|| {
            let mut json = Vec::with_capacity(analysis.normalized.len() + 96);
            push_shape(&mut json, analysis);
            ShapeJson {
                _analysis: Arc::downgrade(analysis),
                json: into_text(json),
            }
        });
        out.extend_from_slice(shape.json.as_bytes());
    }
}

/// `"fingerprint":"…","query":"…",` with the normalized text.
fn push_shape(out: &mut Vec<u8>, analysis: &Analysis) {
    push_fingerprint(out, analysis);
    push_query(out, &analysis.normalized);
}

/// `"fingerprint":"…",`
fn push_fingerprint(out: &mut Vec<u8>, analysis: &Analysis) {
    out.extend_from_slice(b"\"fingerprint\":\"");
    out.extend_from_slice(hex::encode(analysis.fingerprint.0).as_bytes());
    out.extend_from_slice(b"\",");
}

/// The timestamp's text up to its second, kept while the second lasts.
#[derive(Default)]
pub struct Clock {
    second: Option<u64>,
    /// `2026-11-22T10:00:01.`
    prefix: String,
}

impl Clock {
    /// Writes `at` as RFC 3339 UTC with milliseconds, quoted.
    fn push(&mut self, out: &mut Vec<u8>, at: SystemTime) {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second));
            self.prefix = whole.to_string();
            self.prefix.pop(); // the 'Z'
            self.prefix.push('.');
            self.second = Some(second);
        }
        out.push(b'"');
        out.extend_from_slice(self.prefix.as_bytes());
        push_three_digits(out, since.subsec_millis());
        out.extend_from_slice(b"Z\"");
    }
}

/// What repeats between lines, kept by the recorder.
#[derive(Default)]
pub struct LineParts {
    clock: Clock,
    shapes: ShapeFragments,
}

impl LineParts {
    /// Appends `event`'s line (with its newline) to `out`. `analysis` is
    /// the text's shape when it parsed; `log_parameters` logs the text as
    /// sent instead of the normalized one.
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        event: &QueryEvent,
        analysis: Option<&Arc<Analysis>>,
        log_parameters: bool,
    ) {
        out.extend_from_slice(b"{\"ts\":");
        self.clock.push(out, event.at);
        out.extend_from_slice(b",\"duration_ms\":");
        push_ms(out, event.duration);
        out.extend_from_slice(b",\"upstream_ms\":");
        push_ms(out, event.upstream);
        out.extend_from_slice(b",\"pool_wait_ms\":");
        push_ms(out, event.pool_wait);
        out.push(b',');
        match analysis {
            // The text as sent: nothing of the shape is worth keeping.
            Some(analysis) if log_parameters => {
                push_fingerprint(out, analysis);
                push_query(out, &event.text);
            }
            Some(analysis) => self.shapes.push(out, analysis),
            None => {
                out.extend_from_slice(b"\"fingerprint\":\"\",");
                push_query(out, &event.text);
            }
        }
        out.extend_from_slice(b"\"rows\":");
        out.extend_from_slice(itoa::Buffer::new().format(event.rows).as_bytes());
        out.extend_from_slice(b",\"cache\":");
        push_str(out, event.path);
        out.extend_from_slice(b",\"rule\":");
        match &event.rule {
            Some(rule) => push_str(out, rule),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if event.pinned {
            b",\"pinned\":true,"
        } else {
            b",\"pinned\":false,"
        });
        out.extend_from_slice(event.session.json_tail().as_bytes());
        out.push(b'\n');
    }
}

impl LineParts {
    /// Appends the line of an N+1 burst: `ts` (its start), `event`
    /// (`"n_plus_one"`), `fingerprint`, `query` (normalized: a burst is
    /// many values, none of them logged), `count`, `total_ms`, `span_ms`,
    /// `in_transaction`, `preceded_by` (a fingerprint or null),
    /// `preceded_by_query`, then the session's fields.
    pub fn write_burst(&mut self, out: &mut Vec<u8>, burst: &Burst) {
        out.extend_from_slice(b"{\"ts\":");
        self.clock.push(out, burst.started);
        out.extend_from_slice(b",\"event\":\"n_plus_one\",");
        self.shapes.push(out, &burst.shape);
        out.extend_from_slice(b"\"count\":");
        out.extend_from_slice(itoa::Buffer::new().format(burst.count).as_bytes());
        out.extend_from_slice(b",\"total_ms\":");
        push_ms(out, burst.total);
        out.extend_from_slice(b",\"span_ms\":");
        push_ms(out, burst.span);
        out.extend_from_slice(b",\"in_transaction\":");
        out.extend_from_slice(if burst.in_transaction {
            b"true"
        } else {
            b"false"
        });
        match &burst.preceded_by {
            Some(before) => {
                out.extend_from_slice(b",\"preceded_by\":\"");
                out.extend_from_slice(hex::encode(before.fingerprint.0).as_bytes());
                out.extend_from_slice(b"\",\"preceded_by_query\":");
                push_str(out, &before.normalized);
            }
            None => out.extend_from_slice(b",\"preceded_by\":null,\"preceded_by_query\":null"),
        }
        out.push(b',');
        out.extend_from_slice(burst.session.json_tail().as_bytes());
        out.push(b'\n');
    }
}

/// `"query":"…",`
fn push_query(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"\"query\":");
    push_str(out, text);
    out.push(b',');
}

/// Milliseconds with three decimals (microsecond resolution).
fn push_ms(out: &mut Vec<u8>, d: Duration) {
    // In u64: u128 division is a libcall. u64 microseconds last 584,000 years.
    let micros = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_nanos() + 500) / 1000);
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    out.push(b'.');
    push_three_digits(out, (micros % 1000) as u32);
}

fn push_three_digits(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::event::SessionInfo;

    fn event(text: &str, rule: Option<&str>) -> QueryEvent {
        QueryEvent {
            session: Arc::new(SessionInfo::new(
                "al\"ice",
                "db\\1",
                "app\n",
                "127.0.0.1:5000",
            )),
            text: text.into(),
            started: std::time::Instant::now(),
            at: UNIX_EPOCH + Duration::from_millis(1_795_000_000_007),
            duration: Duration::from_nanos(12_345_678),
            path: "miss",
            rows: 3,
            upstream: Duration::from_micros(999_999_999),
            pool_wait: Duration::ZERO,
            rule: rule.map(Arc::from),
            in_transaction: false,
            pinned: false,
        }
    }

    fn line(
        parts: &mut LineParts,
        event: &QueryEvent,
        analysis: Option<&Arc<Analysis>>,
        params: bool,
    ) -> serde_json::Value {
        let mut out = Vec::new();
        parts.write(&mut out, event, analysis, params);
        assert_eq!(out.last(), Some(&b'\n'), "one line, newline-terminated");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).expect("a JSON object")
    }

    #[test]
    fn a_line_is_json_with_every_field_in_order() {
        let analysis =
            Arc::new(pgstash_rules::analyze("SELECT a FROM t WHERE b = 'x\"y'").unwrap());
        let mut parts = LineParts::default();
        let event = event("SELECT a FROM t WHERE b = 'x\"y'", Some("r\u{1}"));
        let mut out = Vec::new();
        parts.write(&mut out, &event, Some(&analysis), false);
        let text = std::str::from_utf8(&out).unwrap();
        let names = [
            "ts",
            "duration_ms",
            "upstream_ms",
            "pool_wait_ms",
            "fingerprint",
            "query",
            "rows",
            "cache",
            "rule",
            "user",
            "database",
            "application_name",
            "client",
        ];
        let at: Vec<usize> = names
            .iter()
            .map(|n| text.find(&format!("\"{n}\":")).expect(n))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "field order: {text}");

        let v = line(&mut parts, &event, Some(&analysis), false);
        assert_eq!(v["ts"], "2026-11-18T11:06:40.007Z");
        assert_eq!(
            v["ts"],
            humantime::format_rfc3339_millis(event.at).to_string(),
            "the same text as humantime's"
        );
        assert_eq!(v["duration_ms"].as_f64(), Some(12.346));
        assert_eq!(v["upstream_ms"].as_f64(), Some(999_999.999));
        assert_eq!(v["pool_wait_ms"].as_f64(), Some(0.0));
        assert_eq!(v["fingerprint"], analysis.fingerprint.to_string());
        assert_eq!(v["query"], &*analysis.normalized);
        assert_eq!(v["rows"], 3);
        assert_eq!(v["cache"], "miss");
        assert_eq!(v["rule"], "r\u{1}");
        assert_eq!(v["user"], "al\"ice");
        assert_eq!(v["database"], "db\\1");
        assert_eq!(v["application_name"], "app\n");
        assert_eq!(v["client"], "127.0.0.1:5000");
    }

    #[test]
    fn parameters_unparsed_texts_and_no_rule() {
        let text = "SELECT a FROM t WHERE b = 'é\t'";
        let analysis = Arc::new(pgstash_rules::analyze(text).unwrap());
        let mut parts = LineParts::default();
        let v = line(&mut parts, &event(text, None), Some(&analysis), true);
        assert_eq!(v["query"], text, "log_parameters logs the text as sent");
        assert_eq!(v["rule"], serde_json::Value::Null);
        let v = line(&mut parts, &event("SELEC oops", None), None, false);
        assert_eq!(v["query"], "SELEC oops");
        assert_eq!(v["fingerprint"], "");
    }

    #[test]
    fn the_kept_second_and_session_fields_follow_changes() {
        let mut parts = LineParts::default();
        let mut e = event("SELECT 1", None);
        let first = line(&mut parts, &e, None, false);
        e.at += Duration::from_millis(1_500);
        e.session = Arc::new(e.session.with_application_name("other"));
        let second = line(&mut parts, &e, None, false);
        assert_eq!(first["ts"], "2026-11-18T11:06:40.007Z");
        assert_eq!(second["ts"], "2026-11-18T11:06:41.507Z");
        assert_eq!(second["application_name"], "other");
        assert_eq!(second["user"], "al\"ice");
    }

    #[test]
    fn kept_shapes_hold_no_analysis_and_long_texts_are_not_kept() {
        let mut parts = LineParts::default();
        let short = Arc::new(pgstash_rules::analyze("SELECT 1").unwrap());
        line(&mut parts, &event("SELECT 1", None), Some(&short), false);
        assert_eq!(parts.shapes.0.len(), 1);
        assert_eq!(
            Arc::strong_count(&short),
            1,
            "the memo holds a weak reference only"
        );

        let text = format!("SELECT {}", vec!["a"; 1500].join(", "));
        let long = Arc::new(pgstash_rules::analyze(&text).unwrap());
        assert!(long.normalized.len() > KEPT_TEXT_MAX);
        let v = line(&mut parts, &event(&text, None), Some(&long), false);
        assert_eq!(v["query"], &*long.normalized);
        assert_eq!(v["fingerprint"], long.fingerprint.to_string());
        assert_eq!(parts.shapes.0.len(), 1, "a long text is written, not kept");
    }

    #[test]
    fn every_control_character_is_escaped() {
        let all: String = (0u8..0x80).map(char::from).chain("ü€😀".chars()).collect();
        let mut out = Vec::new();
        push_str(&mut out, &all);
        let back: String = serde_json::from_slice(&out).expect("valid JSON string");
        assert_eq!(back, all);
        assert!(out[1..out.len() - 1].iter().all(|&b| b >= 0x20));
    }
}
