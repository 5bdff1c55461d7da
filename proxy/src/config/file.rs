//! Reading a config file: TOML text to a [`Config`], with the relative
//! paths in it taken from the file's folder (`paths.rs`) and every error —
//! of syntax, of a value, of a relation between values — placed at
//! `file:line:column` (`locate.rs`).

use std::path::Path;

use super::{locate, paths, Config, ConfigError};

impl Config {
    /// Reads and validates a TOML file. Errors carry the file name, line and column.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses TOML text read from the file `origin`: relative paths in it
    /// are taken from `origin`'s folder (`paths.rs`), and errors name
    /// `origin`, line and column.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let folder = origin.parent().unwrap_or(Path::new(""));
        let parsed = paths::within(folder, || toml::from_str::<Config>(text));
        let mut config = parsed.map_err(|e| {
            // One line, as every `file:line:column: message`.
            let message = e.message().trim().lines().collect::<Vec<_>>().join(": ");
            let problem = ConfigError::Toml(message);
            locate::at(origin, text, e.span().map(|s| s.start), problem)
        })?;
        paths::rebase(&mut config, folder);
        config
            .validate()
            .map_err(|e| locate::in_file(origin, text, e))?;
        Ok(config)
    }
}
