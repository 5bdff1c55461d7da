//! What `pgstash config check FILE` finds in a config file without
//! listening or connecting anywhere: everything `serve` would refuse at
//! start — TOML errors, invalid values, contradictions, files it names
//! that cannot be read — as `file:line:column: message`, and the settings
//! that would have no effect as warnings at the same kind of place. (The
//! rules file it names is checked by the command, as `rules check` does.)

use std::path::Path;

use super::{locate, Config, ConfigError, UserDirectory};

/// A config file that passed, and what it would warn of.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    /// Each `file:line:column: warning: …` (`file: warning: …` when the
    /// key is not written in the file).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates the file, opens every file it names as serving
    /// would, and lists its warnings.
    pub fn check_file(path: &Path) -> Result<Checked, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::from_toml(&text, path)?;
        config
            .open_files()
            .map_err(|e| locate::in_file(path, &text, e))?;
        let warnings = config
            .warnings()
            .into_iter()
            .map(|warning| {
                let problem = format!("warning: {warning}");
                match locate::offset_of_key(&text, warning.key) {
                    Some(offset) => {
                        let (line, column) = locate::line_column(&text, offset);
                        format!("{}:{line}:{column}: {problem}", path.display())
                    }
                    None => format!("{}: {problem}", path.display()),
                }
            })
            .collect();
        Ok(Checked { config, warnings })
    }

    /// Reads what serving reads beyond [`Config::validate`]: the socket
    /// folder, the client TLS certificate and key, the users' passwords.
    pub fn open_files(&self) -> Result<(), ConfigError> {
        if let Some(dir) = &self.unix_socket_dir {
            if !dir.is_dir() {
                return Err(ConfigError::Invalid {
                    key: "unix_socket_dir",
                    reason: format!("{}: not a directory", dir.display()),
                });
            }
        }
        self.tls.server_config()?;
        UserDirectory::from_config(&self.auth)?;
        Ok(())
    }
}
