//! The differential runner: replay the same [`Case`] against Postgres and
//! through pgstash with the raw client, and require identical transcripts.
//!
//! A transcript is every backend message a case receives, with its original
//! bytes. The only thing masked is what legitimately differs between two
//! connections to the same server: the sender's process id inside
//! NotificationResponse. Everything else — row descriptions (same table OIDs,
//! it is the same database), data rows in the requested formats, command tags,
//! every error and notice field, ParameterStatus, ReadyForQuery status — must
//! be byte-identical.

mod case;
pub mod corpus;

pub use case::{Case, Step};

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use pgstash::config::PoolMode;

use crate::postgres::TestPostgres;
use crate::proxy::TestProxy;
use crate::wire::{BackendMessage, RawClient, Startup, WireError};

/// How long one read in a case may wait (a hung proxy fails fast).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(5);
/// After this many timed-out cases, the remaining ones are not run.
pub const MAX_TIMEOUTS: usize = 4;

/// Somewhere to connect the raw client to, with a label for reports.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub label: String,
    pub addr: SocketAddr,
    pub startup: Startup,
}

impl Endpoint {
    pub fn new(label: &str, addr: SocketAddr, startup: Startup) -> Endpoint {
        Endpoint {
            label: label.into(),
            addr,
            startup,
        }
    }

    pub async fn connect(&self) -> Result<RawClient, WireError> {
        let mut c = RawClient::connect_with(self.addr, self.startup.clone()).await?;
        c.timeout = CASE_TIMEOUT;
        Ok(c)
    }
}

/// The two sides a case is compared on: Postgres itself and a pgstash in
/// front of it, over a fresh database holding the corpus fixtures.
pub struct Sides {
    pub direct: Endpoint,
    pub through: Endpoint,
    _proxy: TestProxy,
    _pg: TestPostgres,
}

impl Sides {
    /// pgstash pools `pool_size` server connections in `mode`.
    pub async fn start(mode: PoolMode, pool_size: u32) -> Sides {
        let (pg, proxy) = crate::fixture::pooled(&[corpus::FIXTURES], mode, pool_size).await;
        let direct = Endpoint::new("postgres", pg.addr(), pg.startup());
        let through = Endpoint::new(
            &format!("pgstash ({mode:?} pooling)"),
            proxy.addr,
            proxy.startup(),
        );
        Sides {
            direct,
            through,
            _proxy: proxy,
            _pg: pg,
        }
    }
}

/// Runs the steps of `case` on `client`, returning every message received.
pub async fn run_case(
    client: &mut RawClient,
    case: &Case,
) -> Result<Vec<BackendMessage>, WireError> {
    let mut transcript = Vec::new();
    for step in &case.steps {
        let got = match step {
            Step::Send(msgs) => {
                client.push_all(msgs).send().await?;
                continue;
            }
            Step::ReadyForQuery(n) => client.read_until_ready(*n).await,
            Step::Until(tag) => client.read_until(|m| m.tag == *tag).await,
        };
        match got {
            Ok(msgs) => transcript.extend(msgs),
            Err(WireError::Timeout { after, received }) => {
                transcript.extend(received);
                return Err(WireError::Timeout {
                    after,
                    received: transcript,
                });
            }
            Err(WireError::Closed { received }) => {
                transcript.extend(received);
                return Err(WireError::Closed {
                    received: transcript,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(mask(transcript))
}

/// Masks what legitimately differs between two connections: the backend pid
/// in NotificationResponse.
pub fn mask(mut transcript: Vec<BackendMessage>) -> Vec<BackendMessage> {
    for m in &mut transcript {
        if m.tag == b'A' && m.body.len() >= 4 {
            let mut body = m.body.to_vec();
            body[..4].copy_from_slice(&[0; 4]);
            m.body = body.into();
        }
    }
    transcript
}

/// What comparing a corpus found.
#[derive(Debug, Default)]
pub struct Report {
    pub expected: String,
    pub actual: String,
    pub cases: usize,
    pub failures: Vec<(String, String)>,
}

impl Report {
    /// Panics listing every case whose transcripts differ.
    pub fn assert_identical(&self) {
        if self.failures.is_empty() {
            return;
        }
        let mut s = format!(
            "{} of {} cases differ between {} and {}:\n",
            self.failures.len(),
            self.cases,
            self.expected,
            self.actual
        );
        for (name, _) in &self.failures {
            let _ = writeln!(s, "  - {name}");
        }
        for (name, detail) in &self.failures {
            let _ = write!(s, "\n=== {name}\n{detail}\n");
        }
        panic!("{s}");
    }
}

/// Runs each case on a fresh connection to `expected`, then to `actual`,
/// and compares the transcripts.
pub async fn compare(expected: &Endpoint, actual: &Endpoint, cases: &[Case]) -> Report {
    compare_with(expected, actual, cases, false).await
}

/// Runs all cases one after the other on one connection per side: session
/// state carried between cases (statements, settings) must not change answers.
pub async fn compare_on_one_connection(
    expected: &Endpoint,
    actual: &Endpoint,
    cases: &[Case],
) -> Report {
    compare_with(expected, actual, cases, true).await
}

async fn compare_with(
    expected: &Endpoint,
    actual: &Endpoint,
    cases: &[Case],
    shared: bool,
) -> Report {
    let mut report = Report {
        expected: expected.label.clone(),
        actual: actual.label.clone(),
        cases: cases.len(),
        ..Report::default()
    };
    let mut conns: Option<(RawClient, RawClient)> = None;
    let mut timeouts = 0;
    for case in cases {
        if timeouts >= MAX_TIMEOUTS {
            report.failures.push((
                case.name.clone(),
                format!("not run: {timeouts} earlier cases timed out"),
            ));
            continue;
        }
        let (mut want_client, mut got_client) = match conns.take() {
            Some(pair) => pair,
            None => {
                let want = expected
                    .connect()
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", expected.label));
                match actual.connect().await {
                    Ok(got) => (want, got),
                    Err(e) => {
                        report.failures.push((
                            case.name.clone(),
                            format!("cannot connect to {}: {e}", actual.label),
                        ));
                        continue;
                    }
                }
            }
        };
        let want = run_case(&mut want_client, case).await.unwrap_or_else(|e| {
            panic!(
                "corpus bug: case {:?} fails against {}: {e}",
                case.name, expected.label
            )
        });
        let got = run_case(&mut got_client, case).await;
        let broken = got.is_err();
        match got {
            Ok(got) if got == want => {}
            Ok(got) => report.failures.push((case.name.clone(), diff(&want, &got))),
            Err(e) => {
                if matches!(e, WireError::Timeout { .. }) {
                    timeouts += 1;
                }
                report.failures.push((
                    case.name.clone(),
                    format!(
                        "{} failed: {e}\nexpected (from {}):\n{}",
                        actual.label,
                        expected.label,
                        render(&want)
                    ),
                ));
            }
        }
        if shared && !broken {
            conns = Some((want_client, got_client));
        } else {
            want_client.terminate().await;
            got_client.terminate().await;
        }
    }
    if let Some((a, b)) = conns {
        a.terminate().await;
        b.terminate().await;
    }
    report
}

/// Runs `cases` directly once per case for the expected transcripts, then
/// from `clients` concurrent connections to `actual`, each running every case
/// (starting at a different one) on its one connection. Cases must not
/// interfere with each other when run concurrently (read-only, or writes
/// that roll back).
pub async fn compare_concurrently(
    expected: &Endpoint,
    actual: &Endpoint,
    cases: &[Case],
    clients: usize,
) -> Report {
    let mut wanted = Vec::with_capacity(cases.len());
    for case in cases {
        let mut c = expected
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", expected.label));
        let want = run_case(&mut c, case).await.unwrap_or_else(|e| {
            panic!(
                "corpus bug: case {:?} fails against {}: {e}",
                case.name, expected.label
            )
        });
        c.terminate().await;
        wanted.push(want);
    }
    let wanted = std::sync::Arc::new(wanted);
    let cases = std::sync::Arc::new(cases.to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (actual, wanted, cases) = (actual.clone(), wanted.clone(), cases.clone());
        tasks.spawn(async move {
            let mut failures = Vec::new();
            let mut conn = match actual.connect().await {
                Ok(c) => c,
                Err(e) => {
                    return vec![(format!("client {client}"), format!("cannot connect: {e}"))]
                }
            };
            let n = cases.len();
            for i in (0..n).map(|i| (i + client * n / clients.max(1)) % n) {
                let name = format!("client {client}: {}", cases[i].name);
                match run_case(&mut conn, &cases[i]).await {
                    Ok(got) if got == wanted[i] => {}
                    Ok(got) => failures.push((name, diff(&wanted[i], &got))),
                    Err(e) => {
                        failures.push((name, format!("{} failed: {e}", actual.label)));
                        // The connection is in an unknown state: start over.
                        match actual.connect().await {
                            Ok(c) => conn = c,
                            Err(_) => return failures,
                        }
                    }
                }
            }
            conn.terminate().await;
            failures
        });
    }
    let mut report = Report {
        expected: expected.label.clone(),
        actual: format!("{} with {clients} concurrent clients", actual.label),
        cases: cases.len() * clients,
        ..Report::default()
    };
    for failures in tasks.join_all().await {
        report.failures.extend(failures);
    }
    report
}

/// A readable account of where two transcripts part.
pub fn diff(want: &[BackendMessage], got: &[BackendMessage]) -> String {
    let first = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let mut s = format!(
        "transcripts differ at message #{first} (expected {} messages, got {})\n",
        want.len(),
        got.len()
    );
    let from = first.saturating_sub(2);
    let _ = writeln!(s, "expected:");
    for (i, m) in want.iter().enumerate().skip(from).take(6) {
        let _ = writeln!(s, "  {}#{i} {m:?}", if i == first { ">" } else { " " });
    }
    let _ = writeln!(s, "got:");
    for (i, m) in got.iter().enumerate().skip(from).take(6) {
        let _ = writeln!(s, "  {}#{i} {m:?}", if i == first { ">" } else { " " });
    }
    s
}

/// All messages, one per line.
pub fn render(msgs: &[BackendMessage]) -> String {
    let mut s = String::new();
    for (i, m) in msgs.iter().enumerate().take(40) {
        let _ = writeln!(s, "  #{i} {m:?}");
    }
    if msgs.len() > 40 {
        let _ = writeln!(s, "  … {} more", msgs.len() - 40);
    }
    s
}
