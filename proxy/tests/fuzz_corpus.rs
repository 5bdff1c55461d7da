//! Replays the fuzz corpus (`fuzz/corpus/<target>/`: the hand-made seeds,
//! the shapes of known proxy CVEs, and every crash a fuzzing run found)
//! through the same entry points the cargo-fuzz targets call, on the
//! stable toolchain, so that CI proves on every run that none of them
//! panics pgstash. A longer, coverage-guided run is `tests/fuzz/run`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test: a failure should say where"
)]

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use pgstash::fuzzing;

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// Every fuzz target and the entry point it calls.
const TARGETS: &[(&str, Entry)] = &[
    ("frame_reader", fuzzing::frame_reader),
    ("startup", fuzzing::startup),
    ("client_messages", fuzzing::client_messages),
    ("backend_messages", fuzzing::backend_messages),
    ("scram_server", fuzzing::scram_server),
    ("scram_client", fuzzing::scram_client),
    ("rules_toml", fuzzing::rules_toml),
    ("sql", fuzzing::sql),
    ("replication", fuzzing::replication),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_is_decoded_without_a_panic() {
    let started = Instant::now();
    let mut panicked = Vec::new();
    for (target, entry) in TARGETS {
        let files = files_in(&fuzz_dir().join("corpus").join(target));
        assert!(!files.is_empty(), "no corpus for target {target}");
        for file in files {
            let data = fs::read(&file).unwrap();
            if panic::catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
                panicked.push(file.display().to_string());
            }
        }
    }
    assert!(
        panicked.is_empty(),
        "corpus files that panic pgstash:\n{}",
        panicked.join("\n")
    );
    eprintln!("corpus replayed in {:?}", started.elapsed());
}

/// A target added to `fuzz/` without an entry here would never be
/// replayed: the lists must agree.
#[test]
fn every_fuzz_target_is_replayed() {
    let mut on_disk: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    on_disk.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    replayed.sort();
    assert_eq!(on_disk, replayed);
}
