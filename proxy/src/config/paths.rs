//! Where a file named in the configuration is looked for: a relative path
//! in the config file is relative to the file's folder, as in nginx or
//! Postgres' own `include`, so `pgstash --config /etc/pgstash/pgstash.toml`
//! finds `rules = "rules.toml"` next to it whatever the working directory.
//! A path from a flag or a `PGSTASH_*` variable stays relative to the
//! working directory, as any command-line path. Absolute paths are kept.
//!
//! Most paths are plain `PathBuf` fields, resolved by [`rebase`] right
//! after the file is parsed. The upstream URL's `sslrootcert`, `sslcert`
//! and `sslkey` are read while the URL is parsed (during deserialization),
//! so the file's folder reaches that parser through [`within`].

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use super::Config;

thread_local! {
    /// The folder of the config file being deserialized on this thread.
    static BASE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Restores the previous folder when dropped (also on unwinding).
struct Restore(Option<PathBuf>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        BASE.with_borrow_mut(|base| *base = previous);
    }
}

/// Runs `parse` (the deserialization of a config file in `folder`) with
/// [`base`] answering `folder`.
pub(super) fn within<T>(folder: &Path, parse: impl FnOnce() -> T) -> T {
    let previous = BASE.with_borrow_mut(|base| base.replace(folder.to_owned()));
    let _restore = Restore(previous);
    parse()
}

/// The folder of the config file being deserialized, if one is.
pub(super) fn base() -> Option<PathBuf> {
    BASE.with_borrow(Clone::clone)
}

/// `path` as named in a file in `folder`.
pub(super) fn resolve(folder: &Path, path: &Path) -> PathBuf {
    if path.is_relative() {
        folder.join(path)
    } else {
        path.to_owned()
    }
}

/// Resolves every path-valued key of a config file read from `folder`
/// (the upstream URL's files are resolved when it is parsed).
pub(super) fn rebase(config: &mut Config, folder: &Path) {
    let tls = &mut config.tls;
    let cache = &mut config.cache;
    let paths = [
        &mut config.unix_socket_dir,
        &mut config.rules,
        &mut config.slow_query_log,
        &mut tls.cert_file,
        &mut tls.key_file,
        &mut cache.redis_ca,
        &mut cache.redis_cert,
        &mut cache.redis_key,
    ]
    .into_iter()
    .chain(config.auth.users.iter_mut().map(|u| &mut u.password_file));
    for path in paths.flatten() {
        *path = resolve(folder, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_of_a_file_are_taken_from_its_folder() {
        let text = "rules = \"rules.toml\"\nslow_query_log = \"/var/log/slow.log\"\n\
                    unix_socket_dir = \"../run\"\n[tls]\ncert_file = \"tls/c.pem\"\n\
                    key_file = \"tls/k.pem\"\n[[auth.users]]\nname = \"app\"\n\
                    password_file = \"secret\"\n";
        let config = Config::from_toml(text, Path::new("/etc/pgstash/pgstash.toml")).unwrap();
        assert_eq!(
            config.rules.as_deref(),
            Some(Path::new("/etc/pgstash/rules.toml"))
        );
        assert_eq!(
            config.slow_query_log.as_deref(),
            Some(Path::new("/var/log/slow.log")),
            "an absolute path is kept"
        );
        assert_eq!(
            config.unix_socket_dir.as_deref(),
            Some(Path::new("/etc/pgstash/../run"))
        );
        assert_eq!(
            config.tls.key_file.as_deref(),
            Some(Path::new("/etc/pgstash/tls/k.pem"))
        );
        assert_eq!(
            config.auth.users[0].password_file.as_deref(),
            Some(Path::new("/etc/pgstash/secret"))
        );
    }

    #[test]
    fn the_folder_is_only_set_while_a_file_is_parsed() {
        assert_eq!(base(), None);
        let inside = within(Path::new("/etc/pgstash"), base);
        assert_eq!(inside.as_deref(), Some(Path::new("/etc/pgstash")));
        assert_eq!(base(), None);
    }
}
