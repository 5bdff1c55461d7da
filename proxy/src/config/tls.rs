//! TLS between clients and pgstash: certificate and key files, and whether
//! clients must use it.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tokio_rustls::rustls;

use super::certs;
use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. TLS is offered to clients when this and
    /// `key_file` are set; otherwise SSLRequest is answered "N".
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
    /// Refuse clients that do not use TLS (SQLSTATE 28000).
    pub required: bool,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls",
                reason: "cert_file and key_file go together".into(),
            });
        }
        if self.required && !self.enabled() {
            return Err(ConfigError::Invalid {
                key: "tls.required",
                reason: "needs cert_file and key_file".into(),
            });
        }
        Ok(())
    }

    /// The rustls server configuration, when TLS is configured.
    pub fn server_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            return Ok(None);
        };
        let invalid = |reason: String| ConfigError::Invalid { key: "tls", reason };
        let certs = certs::certificates(cert_file).map_err(invalid)?;
        let key = certs::private_key(key_file).map_err(invalid)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Some(Arc::new(config)))
    }
}
