//! `sslnegotiation=direct` (Postgres 17+: TLS from the first byte, ALPN
//! `postgresql`), which the installed Postgres does not speak: a TLS
//! listener of the test's own stands in front of it, as a Postgres 17
//! would take a direct connection, and relays the decrypted bytes. It
//! accepts nothing but a TLS handshake, so an SSLRequest or a plain cancel
//! request would not get through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgstash::config::Upstream;
use pgstash_tests::certs::Issued;
use pgstash_tests::postgres::{describe, sqlstate, try_connect};
use pgstash_tests::{TestPostgres, TestProxy};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::upstream_tls::{ssl_through, TlsPostgres, PASSWORD};

/// A direct-TLS listener relaying to a plain Postgres port.
struct DirectTls {
    addr: SocketAddr,
    /// Handshakes completed with ALPN `postgresql`.
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DirectTls {
    /// Listens with `cert`; picks ALPN `postgresql` when `alpn` (a server
    /// that does not is not a Postgres 17 taking direct TLS).
    async fn start(cert: &Issued, alpn: bool, postgres_port: u16) -> DirectTls {
        let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        if alpn {
            config.alpn_protocols = vec![b"postgresql".to_vec()];
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() == Some(b"postgresql") {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    let Ok(mut plain) = TcpStream::connect(("127.0.0.1", postgres_port)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        DirectTls {
            addr,
            handshakes,
            task,
        }
    }
}

impl Drop for DirectTls {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn direct_url(tls: &TlsPostgres, port: u16) -> String {
    let ca = tls.ca.cert_path.display();
    format!(
        "postgres://plain_user:{PASSWORD}@localhost:{port}/postgres\
         ?sslmode=verify-full&sslrootcert={ca}&sslnegotiation=direct"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_negotiation_starts_with_the_handshake_and_cancels_go_the_same_way() {
    let Some(tls) = TlsPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let cert = tls.ca.server("direct", &["localhost"]);
    let direct = DirectTls::start(&cert, true, tls.server.port).await;
    let pg = TestPostgres::new().await;
    let upstream = Upstream::parse(&direct_url(&tls, direct.addr.port())).expect("URL");
    let proxy = TestProxy::start(&pg, |c| c.upstream = upstream).await;
    // The relay talks to Postgres in plain text: hostnossl lets plain_user in.
    assert_eq!(ssl_through(&proxy, "plain_user").await, Ok(false));
    assert!(direct.handshakes.load(Ordering::SeqCst) >= 1);

    // A cancel request reaches Postgres through the TLS-only listener.
    let url = format!("postgres://plain_user@{}/postgres", proxy.addr);
    let client = try_connect(&url).await.unwrap();
    let token = client.cancel_token();
    let running = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(10)").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !running.is_finished() {
        assert!(Instant::now() < deadline, "no cancel got through");
        tokio::time::sleep(Duration::from_millis(200)).await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel request to pgstash");
    }
    let err = running.await.unwrap().expect_err("pg_sleep was cancelled");
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("57014"),
        "{}",
        describe(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_negotiation_refuses_a_server_that_does_not_pick_alpn_postgresql() {
    let Some(tls) = TlsPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let cert = tls.ca.server("direct", &["localhost"]);
    let direct = DirectTls::start(&cert, false, tls.server.port).await;
    let pg = TestPostgres::new().await;
    let upstream = Upstream::parse(&direct_url(&tls, direct.addr.port())).expect("URL");
    let proxy = TestProxy::start(&pg, |c| c.upstream = upstream).await;
    let err = ssl_through(&proxy, "plain_user")
        .await
        .expect_err("no ALPN, no connection");
    assert!(err.contains("ALPN"), "{err}");
}
