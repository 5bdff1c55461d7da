//! Files a test owns: fresh temp paths, and files and rules.toml files
//! removed on drop.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A fresh path in the temp dir: `<prefix>_<random>.<ext>` (not created).
pub fn temp_path(prefix: &str, ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.{ext}", crate::unique_name(prefix)))
}

/// A fresh path in the temp dir whose file, if one is made there, is
/// removed on drop.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub fn new(prefix: &str, ext: &str) -> TempFile {
        TempFile {
            path: temp_path(prefix, ext),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A rules.toml of the test's own, removed on drop, that can be rewritten
/// without the hot-reload poller noticing (for testing `/admin/reload`).
pub struct RulesToml {
    file: TempFile,
}

impl RulesToml {
    pub fn new(text: &str) -> RulesToml {
        let file = TempFile::new("rules", "toml");
        std::fs::write(file.path(), text).expect("write rules file");
        RulesToml { file }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Replaces the contents and puts the old modification time back, so
    /// the file-change poller sees nothing: only an explicit reload (admin
    /// endpoint, SIGHUP) can pick the new text up.
    pub fn rewrite_unnoticed(&self, text: &str) {
        let modified = std::fs::metadata(self.path())
            .and_then(|m| m.modified())
            .expect("rules file mtime");
        std::fs::write(self.path(), text).expect("rewrite rules file");
        set_modified(self.path(), modified);
    }
}

fn set_modified(path: &Path, time: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(time))
        .expect("restore rules file mtime");
}
