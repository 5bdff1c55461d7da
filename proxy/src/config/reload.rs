//! The settings a reload of the configuration (SIGHUP) cannot apply,
//! because they are read once, at start: the addresses listened on, the
//! runtime's threads, the log format, and what the cache, its store, the
//! replication stream, the slow-query log file and the query digest were
//! built from. A reload that changes one keeps the running value,
//! so the live configuration always says what is in force, and names
//! the key in a warning: it takes effect at the next restart.

use super::Config;

impl Config {
    /// Puts back into `self` (a configuration about to replace `running`)
    /// the running value of every start-only setting it changes; answers
    /// their keys.
    pub fn keep_start_only(&mut self, running: &Config) -> Vec<&'static str> {
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($field:ident),+) => {$(
                if self.$field != running.$field {
                    self.$field = running.$field.clone();
                    kept.push(stringify!($field));
                }
            )+};
        }
        keep!(
            listen,
            unix_socket_dir,
            metrics_listen,
            workers,
            runtime,
            log_format,
            rules,
            redis,
            slow_query_log,
            digest_size,
            cache,
            replication
        );
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn start_only_changes_are_undone_and_named_and_the_rest_applies() {
        let running = Config::default();
        let mut new = Config::from_toml(
            "listen = \"0.0.0.0:7000\"\nworkers = 3\nslow_query_ms = 5\n\
             [cache]\ncoalesce_wait = \"1s\"\n[pool]\nsize = 7\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(
            new.keep_start_only(&running),
            ["listen", "workers", "cache"]
        );
        assert_eq!(new.listen, running.listen);
        assert_eq!(new.workers, 0);
        assert_eq!(new.cache, running.cache);
        assert_eq!(new.slow_query_ms, 5, "a live setting applies");
        assert_eq!(new.pool.size, 7);
        assert!(new.keep_start_only(&running).is_empty());
    }
}
