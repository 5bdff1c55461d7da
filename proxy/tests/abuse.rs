//! Clients that never log in cannot exhaust pgstash: hundreds of sockets
//! that stay silent, send a password message declaring 60 MiB, or trickle
//! a large one, while a real client logs in and queries throughout. The
//! pgstash binary runs as its own process so that its memory is its own:
//! its RSS must stay within the documented bound (pre-authentication
//! messages are capped at 64 KiB, so a connection holds at most that much
//! input), the silent ones are closed at `login_timeout`, and the
//! oversized ones at once with 08P01.

#![allow(clippy::unwrap_used, reason = "a test: a failure should say where")]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::{Pgstash, SHARED_POSTGRES};

fn start(login_timeout: &str) -> Pgstash {
    Pgstash::start("abuse", |port| {
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             upstream = \"{SHARED_POSTGRES}\"\nworkers = 2\n\
             [client]\nlogin_timeout = \"{login_timeout}\"\nmax_client_conn = 5000\n\
             [auth]\ntype = \"scram-sha-256\"\n\
             [[auth.users]]\nname = \"postgres\"\npassword = \"abuse-test\"\n"
        )
    })
}

fn rss_kib(pgstash: &Pgstash) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pgstash.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn query(pgstash: &Pgstash) -> Result<i32, tokio_postgres::Error> {
    let url = format!(
        "postgres://postgres:abuse-test@127.0.0.1:{}/postgres",
        pgstash.port
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client.query_one("SELECT 6 * 7", &[]).await?;
    Ok(row.get(0))
}

fn startup(user: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for s in ["user", user, "database", "postgres", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A socket that logged in up to the SASL request, then sends the first
/// `send` bytes of a password message declaring `declared` bytes.
async fn password_message(port: u16, declared: i32, send: usize) -> Option<TcpStream> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    socket.write_all(&startup("postgres")).await.ok()?;
    let mut sasl = [0u8; 64];
    let _ = socket.read(&mut sasl).await.ok()?;
    let mut message = vec![b'p'];
    message.extend_from_slice(&declared.to_be_bytes());
    message.extend(std::iter::repeat_n(b'n', send));
    // The oversized ones are cut off mid-write: that is the point.
    let _ = socket.write_all(&message).await;
    Some(socket)
}

/// Whether the server closed `socket` within `wait`.
async fn closed_within(socket: &mut TcpStream, wait: Duration) -> bool {
    let mut sink = vec![0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_sockets_cost_a_bounded_amount_and_are_closed() {
    let login_timeout = Duration::from_secs(5);
    let pgstash = start("5s");
    assert_eq!(query(&pgstash).await.unwrap(), 42);
    let before = rss_kib(&pgstash);
    let started = Instant::now();

    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            TcpStream::connect(("127.0.0.1", pgstash.port))
                .await
                .unwrap(),
        );
    }
    // Declares 60 MiB and sends 2 MiB of it: refused at its header.
    let oversized: Vec<_> = (0..50)
        .map(|_| tokio::spawn(password_message(pgstash.port, 60 << 20, 2 << 20)))
        .collect();
    // Declares just under the cap and trickles half of it, then stalls.
    let mut trickling = Vec::new();
    for _ in 0..100 {
        trickling.push(password_message(pgstash.port, 60_000, 30_000).await);
    }
    let mut oversized_sockets = Vec::new();
    for socket in oversized {
        oversized_sockets.push(socket.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Within the bound while all of them are connected, and served.
    let grown = rss_kib(&pgstash).saturating_sub(before);
    // 100 trickling connections may each hold one pre-authentication
    // message (64 KiB) plus its read buffer; the 350 others almost nothing.
    let bound = 100 * 96 + 350 * 16 + 8 * 1024;
    assert!(
        grown < bound,
        "RSS grew by {grown} KiB under 450 unauthenticated sockets (bound {bound} KiB)"
    );
    assert_eq!(query(&pgstash).await.unwrap(), 42);
    for socket in oversized_sockets.iter_mut().flatten() {
        assert!(
            closed_within(socket, Duration::from_millis(500)).await,
            "an oversized password message was not refused at once"
        );
    }
    assert!(
        started.elapsed() < login_timeout,
        "the machine is too slow for this test"
    );

    for socket in silent.iter_mut().chain(trickling.iter_mut().flatten()) {
        let left = (login_timeout + Duration::from_secs(3)).saturating_sub(started.elapsed());
        assert!(
            closed_within(socket, left).await,
            "an unauthenticated socket outlived the login timeout"
        );
    }
    assert!(started.elapsed() >= login_timeout - Duration::from_millis(500));
    assert_eq!(query(&pgstash).await.unwrap(), 42);
}
