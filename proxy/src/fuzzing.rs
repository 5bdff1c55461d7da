//! The fuzz targets' entry points: one function per target, each taking
//! the raw bytes a peer could send and running them through the same
//! decoding code pgstash runs on a live connection. `fuzz/` (cargo-fuzz)
//! calls them under libFuzzer; `proxy/tests/fuzz_corpus.rs` replays the
//! committed corpus through them on every `cargo test`.
//!
//! Not an API: hidden from the docs, and free to change with the decoders.
//! Every function must return normally for every input; a panic here is a
//! panic a client, a server or a rules file could cause in pgstash.
//!
//! Input formats (what a corpus file holds):
//! - [`frame_reader`]: one control byte, then bytes as they arrive on a
//!   socket (see the function);
//! - [`startup`]: the bytes a client sends before its StartupMessage ends;
//! - [`client_messages`], [`scram_server`]: a client's message stream after
//!   startup (type byte, length, body, …);
//! - [`backend_messages`], [`scram_client`]: a server's message stream;
//! - [`rules_toml`], [`sql`]: text (`sql` decodes it lossily, as the
//!   session does with a Query's text);
//! - [`replication`]: the payload of one CopyData of a replication stream.

use std::sync::OnceLock;

use crate::config::ScramKeys;
use pgstash_rules::{AnalysisCache, Catalog, RuleSet, SessionFacts, TableRef, Volatility, Writes};

use crate::backend::connect::{AuthExchange, AuthStep, ConnectTarget};
use crate::backend::error::BackendError;
use crate::backend::params::SessionParams;
use crate::backend::server::{decode_text_row, parameter_status, UPSTREAM_FRAME_LIMIT};
use crate::backend::statement_names::StatementNames;
use crate::cache::entry;
use crate::config::PoolMode;
use crate::frontend::auth::sasl_initial_response;
use crate::frontend::expect::{Effects, Expect, ExpectQueue};
use crate::frontend::session::{ClientStatements, UnitRequest};
use crate::frontend::statements::{self, ParseMessage};
use crate::net::body::Body;
use crate::net::frame::{Frame, FrameReader};
use crate::net::message::{self, ftag, tag, Severity};
use crate::net::startup::{decode_startup_packet, StartupPacket};
use crate::replication::protocol::{self, Stream as ReplicationStream};

/// The client message limit the targets use: the default of
/// `max_message_bytes`, as a client meets it.
const CLIENT_LIMIT: usize = 64 * 1024 * 1024;

/// The frame reader, as a client or a server drives it.
///
/// The first byte chooses the reader and how the rest arrives: bit 7 set is
/// a server connection's reader (no type check, frames peeked and consumed
/// in place, as the relay reads them), clear a client's (frontend types
/// only, frames cut out); the low five bits plus one are the size of the
/// pieces the bytes arrive in, so a message split across reads is cut the
/// same as one read whole. Every frame must be a whole message whose
/// length field says its size.
pub fn frame_reader(data: &[u8]) {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let server = control & 0x80 != 0;
    let piece = usize::from(control & 0x1f) + 1;
    let mut reader = if server {
        FrameReader::new(UPSTREAM_FRAME_LIMIT)
    } else {
        FrameReader::frontend(CLIENT_LIMIT)
    };
    for chunk in wire.chunks(piece) {
        reader.feed(chunk);
        loop {
            let next = if server {
                match reader.peek() {
                    Ok(Some(frame)) => {
                        let len = frame.len();
                        check_frame(frame.as_bytes());
                        reader.consume(len);
                        Ok(Some(()))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                }
            } else {
                reader
                    .next_frame()
                    .map(|f| f.map(|f| check_frame(f.as_bytes())))
            };
            match next {
                Ok(Some(())) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = e.sqlstate();
                    return;
                }
            }
        }
    }
}

/// A frame the reader handed out is one whole message.
fn check_frame(bytes: &[u8]) {
    let declared = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    assert!(declared >= 4, "frame with length {declared}");
    assert_eq!(bytes.len(), declared as usize + 1, "frame size");
}

/// The startup phase: SSLRequest, GSSENCRequest, CancelRequest and
/// StartupMessage packets back to back, each decoded as the handshake
/// does, and a StartupMessage's parameters turned into the settings the
/// client's server connections get (the `options` parsing included).
pub fn startup(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((packet, length))) = decode_startup_packet(rest) {
        if let StartupPacket::Startup { params, .. } = packet {
            let settings = SessionParams::from_startup(&params);
            let _ = settings.transition_sql(&SessionParams::default());
            let _ = SessionParams::default().transition_sql(&settings);
            return;
        }
        rest = &rest[length..];
    }
}

/// A client's messages after startup, each decoded by what pgstash reads
/// of it (Parse, Bind, Describe, Execute, Close, Query, password
/// messages); each extended-protocol request up to its Sync is then looked
/// at as the cache path does (is it one statement the cache may answer?),
/// with the statements its Parse messages prepared.
pub fn client_messages(data: &[u8]) {
    let mut reader = FrameReader::frontend(CLIENT_LIMIT);
    reader.feed(data);
    let mut statements = ClientStatements::default();
    let mut held: Vec<Frame> = Vec::new();
    while let Ok(Some(frame)) = reader.next_frame() {
        decode_client_message(&frame, &mut statements);
        if frame.tag() == ftag::SYNC {
            for mode in [PoolMode::Transaction, PoolMode::Session] {
                if let Ok(Some(request)) = UnitRequest::of(&held, &statements, mode) {
                    let _ = request.form();
                }
            }
            held.clear();
        } else if held.len() < 64 {
            held.push(frame);
        }
    }
}

fn decode_client_message(frame: &Frame, statements: &mut ClientStatements) {
    let body = frame.body();
    match frame.tag() {
        ftag::PARSE => {
            if let Ok(parse) = ParseMessage::decode(body) {
                let _ = parse.query_text();
                if let Some(bound) = statements.bound(Some((frame, &parse)), parse.name) {
                    statements.served_parse(frame, &parse, bound, &StatementNames::default());
                }
            }
        }
        ftag::BIND => {
            if let Ok(parts) = statements::bind_parts(body) {
                let _ = statements::bind_values(parts.rest);
                let _ = statements.text_of(parts.statement);
            }
            let _ = statements::bind_statement(body);
            let _ = statements::rewrite_bind(body, "pgstash_0123456789abcdef01234567");
        }
        ftag::DESCRIBE => {
            let _ = statements::decode_target(body, "Describe");
        }
        ftag::CLOSE => {
            if let Ok((_, name)) = statements::decode_target(body, "Close") {
                let _ = statements.text_of(name);
            }
        }
        ftag::EXECUTE => {
            let _ = statements::execute_parts(body);
        }
        ftag::QUERY => {
            let _ = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body));
        }
        ftag::PASSWORD => {
            let _ = sasl_initial_response(body);
            let _ = body.strip_suffix(&[0]).unwrap_or(body);
        }
        _ => {}
    }
}

/// The keys of the user the SCRAM targets log in as (fixed, so that a run
/// is reproducible; pgstash makes up keys like these for unknown users).
fn scram_verifier() -> ScramKeys {
    ScramKeys {
        salt: (0u8..16).collect(),
        iterations: 4096,
        stored_key: (32u8..64).collect(),
        server_key: (64u8..96).collect(),
    }
}

/// The server side of SCRAM-SHA-256 with a client: the first password
/// message is the SASLInitialResponse (mechanism, length, client-first),
/// the second the client-final, as `frontend/auth.rs` reads them.
pub fn scram_server(data: &[u8]) {
    let mut reader = FrameReader::frontend(CLIENT_LIMIT);
    reader.feed(data);
    let Ok(Some(first)) = reader.next_frame() else {
        return;
    };
    let Ok((_mechanism, client_first)) = sasl_initial_response(first.body()) else {
        return;
    };
    let Ok(waiting) = crate::scram::server::start(client_first, &scram_verifier()) else {
        return;
    };
    if let Ok(Some(last)) = reader.next_frame() {
        let _ = waiting.finish(last.body());
    }
}

/// The client side of an upstream login: Authentication requests
/// (cleartext, md5, SASL, SASLContinue, SASLFinal…) answered as pgstash
/// answers them, and ErrorResponses read, until the login ends.
pub fn scram_client(data: &[u8]) {
    let mut reader = FrameReader::new(UPSTREAM_FRAME_LIMIT);
    reader.feed(data);
    let target = ConnectTarget {
        upstream: crate::config::Upstream::default(),
        database: "fuzz".into(),
        user: "fuzz".into(),
        password: Some("fuzz-password".into()),
        pass_through: None,
    };
    let mut exchange = AuthExchange::new(&target);
    while let Ok(Some(frame)) = reader.next_frame() {
        match frame.tag() {
            tag::AUTHENTICATION => match exchange.answer(frame.body()) {
                Ok(AuthStep::Send(_) | AuthStep::Wait) => {}
                Ok(AuthStep::Done) | Err(_) => return,
            },
            tag::ERROR_RESPONSE => {
                let _ =
                    BackendError::from_error_frame(frame.into_bytes()).to_client(Severity::Fatal);
                return;
            }
            _ => return,
        }
    }
}

/// A server's messages, each decoded by what pgstash reads of it: error
/// and notice fields (and the renaming of a statement in an error),
/// ParameterStatus, DataRow (internal queries), CommandComplete's row
/// count, BackendKeyData, ReadyForQuery; every message also goes through
/// the queue that pairs answers with requests. The whole input is also
/// read as a cache entry (the frames of one answer).
pub fn backend_messages(data: &[u8]) {
    let _ = entry::rows(data);
    let mut reader = FrameReader::new(UPSTREAM_FRAME_LIMIT);
    reader.feed(data);
    let mut queue = ExpectQueue::default();
    while let Ok(Some(frame)) = reader.next_frame() {
        if queue.is_empty() {
            push_request(&mut queue);
        }
        let mut effects = Effects::default();
        let _ = queue.on_server_message(frame.tag(), &mut effects);
        queue.drain_synthetic(&mut effects.due);
        decode_backend_message(frame);
    }
}

/// An extended-protocol request with an injected Parse and an answer
/// pgstash makes itself, as a transaction-mode session queues them.
fn push_request(queue: &mut ExpectQueue) {
    queue.push(Expect::Parse {
        forward: false,
        prepared: Some("pgstash_0123".into()),
        rename: Some(("pgstash_0123".into(), "s1".into())),
    });
    queue.push(Expect::Bind {
        statement: Some("pgstash_0123".into()),
    });
    queue.push(Expect::DescribePortal);
    queue.push(Expect::Execute { forget: None });
    queue.push(Expect::Synthetic(message::close_complete()));
    queue.push(Expect::Sync);
}

fn decode_backend_message(frame: Frame) {
    let body = frame.body();
    match frame.tag() {
        tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => {
            let _ = message::error_fields(body);
            let _ = message::rename_in_error(frame.as_bytes(), "pgstash_0123", "s1");
            let error = BackendError::from_error_frame(frame.into_bytes());
            let _ = error.to_client(Severity::Error);
            let _ = error.to_string();
        }
        tag::PARAMETER_STATUS => {
            let _ = parameter_status(body);
        }
        tag::DATA_ROW => {
            let _ = decode_text_row(body);
        }
        tag::COMMAND_COMPLETE => {
            let _ = entry::rows_in_tag(body);
        }
        tag::BACKEND_KEY_DATA => {
            let mut body = Body::new(body, "BackendKeyData");
            let _ = (body.i32(), body.i32());
        }
        tag::READY_FOR_QUERY => {
            let _ = body.first().copied().unwrap_or(b'I');
        }
        _ => {}
    }
}

/// rules.toml: parsed and validated; a file that loads is then asked for
/// the rule of a few queries and what to do with them.
pub fn rules_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = pgstash_rules::parse_rules(text, "rules.toml") else {
        return;
    };
    let analyses = AnalysisCache::new(16);
    for sql in SAMPLE_QUERIES {
        if let Ok(analysis) = analyses.analyze(sql) {
            let _ = rules.find(&analysis);
            let _ = pgstash_rules::decide(&analysis, &rules, &FACTS, &Permissive);
        }
    }
}

/// Queries [`rules_toml`] asks a loaded rules file about.
const SAMPLE_QUERIES: &[&str] = &[
    "SELECT * FROM products WHERE id = 1",
    "SELECT name FROM shop.products p JOIN orders o ON o.pid = p.id",
    "select lower('A') from public.t",
];

const FACTS: SessionFacts = SessionFacts {
    in_transaction: false,
    role_changed: false,
};

/// The rules [`sql`] decides under: a query rule, and a tables rule over
/// the relation names the seed corpus uses.
fn sql_rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let text = r#"
            [[rule]]
            name = "one"
            query = "SELECT * FROM t WHERE id = 1"
            [[rule]]
            name = "tables"
            tables = ["t", "a", "b", "x", "users", "products", "orders", "public.t"]
            allow_stable_functions = true
        "#;
        pgstash_rules::parse_rules(text, "fuzz").unwrap_or_default()
    })
}

/// A catalog that knows everything and allows everything, so that a
/// decision goes as deep as it can.
struct Permissive;

impl Catalog for Permissive {
    fn function_volatility(&self, _: Option<&str>, _: &str) -> Option<Volatility> {
        Some(Volatility::Immutable)
    }

    fn table_has_rls(&self, _: Option<&str>, _: &str) -> Option<bool> {
        Some(false)
    }

    fn is_temp_table(&self, _: Option<&str>, _: &str) -> Option<bool> {
        Some(false)
    }

    fn read_dependencies(&self, _: Option<&str>, _: &str) -> Option<Vec<TableRef>> {
        Some(Vec::new())
    }
}

/// The SQL path a Query's text takes: session effects (for the pooler),
/// the literal mask and the analysis (as the analysis cache does it),
/// fingerprint, normalized text and literal values, the writes to
/// invalidate and the caching decision, or the decision for text that does
/// not parse.
pub fn sql(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let sql = text.as_ref();
    let _ = pgstash_rules::session_effects(sql);
    let _ = pgstash_rules::literal_mask(sql);
    let _ = pgstash_rules::is_time_sensitive_input(sql);
    let analyses = AnalysisCache::new(4);
    let Ok(analysis) = analyses.analyze(sql) else {
        let _ = pgstash_rules::decide_unparsable(sql);
        return;
    };
    let _ = Writes::of(&analysis);
    let _ = (analysis.tables_read(), analysis.tables_written());
    for facts in [
        FACTS,
        SessionFacts {
            in_transaction: true,
            role_changed: true,
        },
    ] {
        let _ = pgstash_rules::decide(&analysis, sql_rules(), &facts, &Permissive);
    }
    if let Ok(fingerprint) = pgstash_rules::fingerprint(sql) {
        let _ = fingerprint;
    }
    let _ = pgstash_rules::literal_values(sql);
}

/// A replication stream's CopyData payload: XLogData (and the pgoutput
/// message inside it) or a keepalive, as invalidation reads them.
pub fn replication(data: &[u8]) {
    let _ = protocol::decode_output(data);
    if let Ok(ReplicationStream::XLogData { message, .. }) = protocol::decode_stream(data) {
        let _ = protocol::decode_output(message);
    }
}
