//! Reading PEM certificates, private keys and trust anchors from files (or
//! the platform's trust store), for every TLS configuration pgstash builds:
//! the client-facing server, the upstream client and the Redis client.
//!
//! Each function answers a message that names the file, for a startup
//! error; a file that is read but holds nothing usable is an error too.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;

/// Trust anchors: a CA file, or the platform's trust store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots<'a> {
    File(&'a Path),
    /// What OpenSSL's default paths hold (`rustls-native-certs` reads the
    /// same files, honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`).
    System,
}

/// Every certificate in a PEM file (a chain, leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A client's private key, refused (as libpq refuses `sslkey`) when others
/// may read it: a key owned by the user pgstash runs as must be `0600` or
/// less, one owned by root `0640` or less.
pub fn client_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.mode();
    let exposed = if meta.uid() == rustix::process::geteuid().as_raw() {
        mode & 0o077 != 0
    } else if meta.uid() == 0 {
        mode & 0o037 != 0
    } else {
        false
    };
    if exposed {
        return Err(format!(
            "{}: private key file has group or world access; file must have permissions \
             u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) \
             or less if owned by root",
            path.display()
        ));
    }
    private_key(path)
}

/// A root store of the given trust anchors.
pub fn root_store(roots: Roots<'_>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let (added, _) = store.add_parsable_certificates(certificates(path)?);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", path.display()));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "the system trust store holds no usable CA certificate{why}"
                ));
            }
        }
    }
    Ok(store)
}
