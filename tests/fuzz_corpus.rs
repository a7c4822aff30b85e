//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`, crash inputs that were fixed
//! included) through the same entry points the cargo-fuzz targets call, so a plain `cargo test`
//! catches a regression without libFuzzer. Fuzz for new inputs with `bench/fuzz.sh`.

use std::panic;
use std::path::Path;

#[test]
fn every_corpus_input_runs_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    for target in leadgate::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no seeds", dir.display());
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            if panic::catch_unwind(|| leadgate::fuzzing::run(target, &data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "panicked on: {failures:#?}");
}
