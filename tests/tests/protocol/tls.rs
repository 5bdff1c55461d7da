//! TLS between clients and pgstash: a configured certificate is offered on
//! SSLRequest (psql with sslmode=require connects over TLS and gets its
//! answers), and `tls.required` refuses clients that do not use it.

use std::process::Command;

use pgstash_tests::{TestPostgres, TestProxy};

/// A self-signed certificate and key written to a temp dir.
fn certificate() -> (tempfile_dir::Dir, std::path::PathBuf, std::path::PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let dir = tempfile_dir::Dir::new();
    let cert_path = dir.path().join("server.crt");
    let key_path = dir.path().join("server.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (dir, cert_path, key_path)
}

mod tempfile_dir {
    /// A directory removed when dropped.
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!(
                "pgstash-tls-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn psql(proxy: &TestProxy, sslmode: &str, command: &str) -> std::process::Output {
    let conninfo = format!(
        "host={} port={} user={} dbname={} sslmode={sslmode}",
        proxy.addr.ip(),
        proxy.addr.port(),
        proxy.user,
        proxy.database
    );
    Command::new("psql")
        .args([&conninfo, "-X", "-A", "-t", "-c", command])
        .output()
        .expect("psql runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_connects_over_tls_when_a_certificate_is_configured() {
    let pg = TestPostgres::new().await;
    let (_dir, cert, key) = certificate();
    let proxy = TestProxy::start(&pg, |c| {
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
    })
    .await;
    let out = tokio::task::spawn_blocking(move || {
        let conninfo = psql(&proxy, "require", "\\conninfo");
        let answer = psql(&proxy, "require", "select 40 + 2");
        (conninfo, answer)
    })
    .await
    .unwrap();
    let conninfo = String::from_utf8_lossy(&out.0.stdout);
    assert!(
        conninfo.contains("SSL connection (protocol: TLS"),
        "{conninfo}"
    );
    assert_eq!(String::from_utf8_lossy(&out.1.stdout).trim(), "42");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_certificate_ssl_is_declined_and_plain_tcp_works() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::start(&pg, |_| {}).await;
    let (required, preferred) = tokio::task::spawn_blocking(move || {
        (
            psql(&proxy, "require", "select 1"),
            psql(&proxy, "prefer", "select 1"),
        )
    })
    .await
    .unwrap();
    assert!(!required.status.success());
    assert!(String::from_utf8_lossy(&required.stderr).contains("does not support SSL"));
    assert_eq!(String::from_utf8_lossy(&preferred.stdout).trim(), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn required_tls_refuses_plain_clients_with_28000() {
    let pg = TestPostgres::new().await;
    let (_dir, cert, key) = certificate();
    let proxy = TestProxy::start(&pg, |c| {
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.tls.required = true;
    })
    .await;
    let (plain, tls) = tokio::task::spawn_blocking(move || {
        (
            psql(&proxy, "disable", "select 1"),
            psql(&proxy, "require", "select 1"),
        )
    })
    .await
    .unwrap();
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("pgstash requires TLS"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&tls.stdout).trim(), "1");
}
