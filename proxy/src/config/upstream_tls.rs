//! TLS between pgstash and the upstream Postgres, set as libpq sets it: the
//! upstream URL's `sslmode`, `sslrootcert`, `sslcert`, `sslkey` and
//! `sslnegotiation` parameters, with libpq's defaults, its rules between
//! them and its meaning for each mode. What an attempt sends on the wire is
//! `backend/negotiate.rs`.
//!
//! | sslmode | tries | server certificate |
//! |---|---|---|
//! | `disable` | plain | — |
//! | `allow` | plain, then TLS if Postgres refuses the plain login | as `require` |
//! | `prefer` (default) | TLS, then plain if Postgres declines TLS, the handshake fails or the login over TLS is refused | as `require` |
//! | `require` | TLS | not checked; checked as `verify-ca` when `sslrootcert` is given (libpq's compatibility rule) |
//! | `verify-ca` | TLS | chains to `sslrootcert` |
//! | `verify-full` | TLS | chains to `sslrootcert` and names the host |
//!
//! Where pgstash differs from libpq, on purpose:
//! - no file is read from a default place (`~/.postgresql/root.crt`,
//!   `postgresql.crt`, `postgresql.key`) nor named by `PGSSL*` variables: a
//!   server's trust is in its configuration. So `verify-ca`/`verify-full`
//!   without `sslrootcert` is a startup error (libpq fails each connection
//!   for the missing default file), and `sslcert` and `sslkey` go together;
//! - a parameter that would have no effect (`sslrootcert` with
//!   `sslmode=disable`, say) is an error rather than ignored;
//! - `verify-full` matches the host against the certificate's subject
//!   alternative names only (rustls), not a Common Name without them;
//! - an `sslrootcert` that cannot be read is an error in every mode (libpq
//!   goes on unverified under `require`, `prefer` and `allow` when the file
//!   is missing);
//! - files are read at startup and at each reload, not per connection; a
//!   reload that finds different contents replaces the pooled connections,
//!   as a changed URL does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::client::WebPkiServerVerifier;

use super::certs::{self, Roots};
use super::verify::{ChainOnly, Unverified};

/// The ALPN protocol Postgres 17+ and libpq 17+ name their protocol with.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What one connection attempt is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    Plain,
    Tls,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "invalid sslmode value: {other:?} (disable, allow, prefer, require, \
                     verify-ca or verify-full)"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The attempts a TCP connection makes, in order: libpq's
    /// `select_next_encryption_method` (plain first for `allow`, TLS first
    /// for `prefer`, one kind for the others). Unix sockets are always
    /// plain, whatever the mode, as in libpq.
    pub fn attempts(self) -> &'static [Encryption] {
        match self {
            SslMode::Disable => &[Encryption::Plain],
            SslMode::Allow => &[Encryption::Plain, Encryption::Tls],
            SslMode::Prefer => &[Encryption::Tls, Encryption::Plain],
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => &[Encryption::Tls],
        }
    }

    /// Whether a connection in this mode may go on without TLS.
    pub fn allows_plain(self) -> bool {
        self.attempts().contains(&Encryption::Plain)
    }
}

/// libpq's `sslnegotiation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslNegotiation {
    /// SSLRequest first, TLS after Postgres answers `S`.
    #[default]
    Postgres,
    /// TLS from the first byte, ALPN `postgresql` (Postgres 17+).
    Direct,
}

/// `sslrootcert`: a CA file, or `system` for the platform's trust store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    System,
}

/// `sslcert` and `sslkey`: pgstash's client certificate, sent when the
/// server asks for one (`hostssl … cert`, `clientcert=verify-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The upstream TLS settings, and the rustls configuration built from them.
#[derive(Clone)]
pub struct UpstreamTls {
    pub mode: SslMode,
    pub negotiation: SslNegotiation,
    pub root_cert: Option<RootCert>,
    pub client_cert: Option<ClientCert>,
    /// SHA-256 of the files' contents (hex; empty without files): a reload
    /// that reads other certificates is a change of the upstream.
    files: String,
    /// `None` for `sslmode=disable`.
    client_config: Option<Arc<rustls::ClientConfig>>,
}

impl UpstreamTls {
    /// The rustls configuration TLS attempts use (`None` when disabled).
    pub fn client_config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.client_config.as_ref()
    }

    /// Whether the certificate must name the host (`verify-full`).
    pub fn checks_host(&self) -> bool {
        self.mode == SslMode::VerifyFull
    }
}

/// The settings only (the built configuration follows from them).
impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("mode", &self.mode)
            .field("negotiation", &self.negotiation)
            .field("root_cert", &self.root_cert)
            .field("client_cert", &self.client_cert)
            .field("files", &self.files)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.negotiation == other.negotiation
            && self.root_cert == other.root_cert
            && self.client_cert == other.client_cert
            && self.files == other.files
    }
}

impl Eq for UpstreamTls {}

/// The TLS parameters of an upstream URL, as given.
#[derive(Debug, Default)]
pub(super) struct TlsParams {
    sslmode: Option<String>,
    sslnegotiation: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

impl TlsParams {
    /// Takes `key` if it is a TLS parameter: `Ok(true)`; `Ok(false)` for
    /// another parameter; an error for one given twice.
    pub(super) fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslnegotiation" => &mut self.sslnegotiation,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            _ => return Ok(false),
        };
        if slot.is_some() {
            return Err(format!("{key} is given twice"));
        }
        *slot = Some(value.to_owned());
        Ok(true)
    }

    /// Applies libpq's defaults and rules (in libpq's order, with its
    /// messages where it has one), then reads the files; relative file
    /// names are taken from `folder` (a config file's, see `paths.rs`), or
    /// from the working directory.
    pub(super) fn resolve(self, folder: Option<&Path>) -> Result<UpstreamTls, String> {
        let file = |name: String| match folder {
            Some(folder) => super::paths::resolve(folder, Path::new(&name)),
            None => PathBuf::from(name),
        };
        let root_cert = match self.sslrootcert {
            None => None,
            Some(name) if name.is_empty() => return Err("sslrootcert is empty".into()),
            Some(name) if name == "system" => Some(RootCert::System),
            Some(name) => Some(RootCert::File(file(name))),
        };
        let mode = match self.sslmode.as_deref() {
            Some(value) => SslMode::parse(value)?,
            // libpq: sslrootcert=system makes verify-full the default.
            None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
            None => SslMode::default(),
        };
        let negotiation = match self.sslnegotiation.as_deref() {
            None | Some("postgres") => SslNegotiation::Postgres,
            Some("direct") => SslNegotiation::Direct,
            Some(other) => {
                return Err(format!(
                    "invalid sslnegotiation value: {other:?} (postgres or direct)"
                ))
            }
        };
        if negotiation == SslNegotiation::Direct && mode.allows_plain() {
            return Err(format!(
                "weak sslmode \"{}\" may not be used with sslnegotiation=direct \
                 (use \"require\", \"verify-ca\", or \"verify-full\")",
                mode.as_str()
            ));
        }
        if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                mode.as_str()
            ));
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(format!(
                "sslmode={} needs sslrootcert: a CA file, or \"system\" for the platform's \
                 trust store (pgstash reads no default ~/.postgresql/root.crt)",
                mode.as_str()
            ));
        }
        let client_cert = match (self.sslcert, self.sslkey) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: file(cert),
                key: file(key),
            }),
            _ => {
                return Err("sslcert and sslkey go together (pgstash reads no default \
                            ~/.postgresql/postgresql.crt or .key)"
                    .into())
            }
        };
        if mode == SslMode::Disable && (root_cert.is_some() || client_cert.is_some()) {
            return Err(
                "sslrootcert, sslcert and sslkey have no effect with sslmode=disable".into(),
            );
        }
        let mut tls = UpstreamTls {
            mode,
            negotiation,
            root_cert,
            client_cert,
            files: String::new(),
            client_config: None,
        };
        if mode != SslMode::Disable {
            tls.client_config = Some(Arc::new(client_config(&tls)?));
            tls.files = fingerprint(&tls);
        }
        Ok(tls)
    }
}

/// The hash of the files `tls` read (they were just read: an error now is
/// a file replaced in between, which the next reload will see).
fn fingerprint(tls: &UpstreamTls) -> String {
    use sha2::{Digest, Sha256};
    let root = match &tls.root_cert {
        Some(RootCert::File(path)) => Some(path),
        _ => None,
    };
    let client = tls.client_cert.iter().flat_map(|c| [&c.cert, &c.key]);
    let files: Vec<&PathBuf> = root.into_iter().chain(client).collect();
    if files.is_empty() {
        return String::new();
    }
    let mut hash = Sha256::new();
    for path in files {
        hash.update(std::fs::read(path).unwrap_or_default());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// The rustls client configuration for `tls` (not `disable`).
fn client_config(tls: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &tls.root_cert {
        Some(RootCert::File(path)) => Some(certs::root_store(Roots::File(path))?),
        Some(RootCert::System) => Some(certs::root_store(Roots::System)?),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        Some(roots) if tls.checks_host() => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?
        }
        // libpq checks the chain whenever it has a root certificate, in
        // every mode that tries TLS.
        Some(roots) => Arc::new(ChainOnly::new(roots, provider.clone())),
        None => Arc::new(Unverified::new(provider.clone())),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.client_cert {
        Some(client) => builder
            .with_client_auth_cert(
                certs::certificates(&client.cert)?,
                certs::client_private_key(&client.key)?,
            )
            .map_err(|e| format!("sslcert/sslkey: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    // libpq 17+ offers it on every TLS connection; direct negotiation
    // requires the server to pick it.
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(pairs: &[(&str, &str)]) -> Result<UpstreamTls, String> {
        let mut params = TlsParams::default();
        for (k, v) in pairs {
            assert!(params.take(k, v)?, "{k} is a TLS parameter");
        }
        params.resolve(None)
    }

    #[test]
    fn prefer_is_the_default_and_tries_tls_then_plain() {
        let tls = resolve(&[]).unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(tls.mode.attempts(), [Encryption::Tls, Encryption::Plain]);
        assert!(tls.client_config().is_some());
        assert_eq!(
            SslMode::Allow.attempts(),
            [Encryption::Plain, Encryption::Tls]
        );
        assert!(resolve(&[("sslmode", "disable")])
            .unwrap()
            .client_config()
            .is_none());
    }

    #[test]
    fn libpq_rules_between_parameters_are_startup_errors() {
        let err = |pairs: &[(&str, &str)]| resolve(pairs).unwrap_err();
        assert!(err(&[("sslmode", "required")]).contains("invalid sslmode value"));
        assert!(err(&[("sslnegotiation", "direct")]).contains("weak sslmode \"prefer\""));
        assert!(err(&[("sslmode", "allow"), ("sslnegotiation", "direct")])
            .contains("sslnegotiation=direct"));
        assert!(err(&[("sslrootcert", "system"), ("sslmode", "verify-ca")])
            .contains("may not be used with sslrootcert=system"));
        assert!(err(&[("sslmode", "verify-full")]).contains("needs sslrootcert"));
        assert!(err(&[("sslcert", "/c.pem")]).contains("go together"));
        assert!(err(&[("sslmode", "disable"), ("sslrootcert", "/ca.pem")]).contains("no effect"));
        assert!(
            err(&[("sslmode", "require"), ("sslrootcert", "/no/such/ca.pem")])
                .contains("/no/such/ca.pem")
        );
        let mut twice = TlsParams::default();
        assert!(twice.take("sslmode", "require").unwrap());
        assert!(twice.take("sslmode", "disable").is_err());
        assert!(!twice.take("host", "x").unwrap());
    }

    #[test]
    fn sslrootcert_system_defaults_to_verify_full() {
        // The platform's store may be empty on a bare machine: the mode is
        // settled before any file is read.
        match resolve(&[("sslrootcert", "system")]) {
            Ok(tls) => assert_eq!(tls.mode, SslMode::VerifyFull),
            Err(e) => assert!(e.contains("system trust store"), "{e}"),
        }
    }
}
