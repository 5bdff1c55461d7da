//! A certificate authority of one test's own (rcgen): server certificates
//! for the names a test connects by, client certificates for a user, each
//! written as PEM files (keys `0600`) into a directory removed on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA and the directory its files are written to.
pub struct TestCa {
    dir: PathBuf,
    cert: Certificate,
    key: KeyPair,
    /// The CA certificate (PEM), what a client trusts.
    pub cert_path: PathBuf,
}

/// A certificate and its key, as files and as text.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let dir = crate::files::temp_path(&format!("pgstash-ca-{name}"), "d");
        std::fs::create_dir_all(&dir).expect("create CA dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("pgstash test CA {name}"));
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let cert_path = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&cert_path, cert.pem()).expect("write CA certificate");
        TestCa {
            dir,
            cert,
            key,
            cert_path,
        }
    }

    /// The CA certificate as PEM text.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, stem: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{stem} server"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(stem, params)
    }

    /// A client certificate whose Common Name is `user` (what Postgres'
    /// `cert` authentication matches).
    pub fn client(&self, stem: &str, user: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(stem, params)
    }

    fn issue(&self, stem: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign certificate");
        let issued = Issued {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&issued.cert, &issued.cert_pem).expect("write certificate");
        std::fs::write(&issued.key, &issued.key_pem).expect("write key");
        std::fs::set_permissions(&issued.key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
        issued
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
