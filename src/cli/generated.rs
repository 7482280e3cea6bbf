//! Generated files are committed (`packaging/`), so building the .deb runs no generator; this
//! is the check that they are what the generator makes now, and the way to refresh them:
//! `METADATAFS_BLESS=1 cargo test --lib generated` writes them instead of failing.

use std::path::Path;

/// Fail unless `path` (relative to the crate) holds exactly `expected`; rewrite it when blessing.
pub(crate) fn check(path: &str, expected: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("METADATAFS_BLESS").is_some_and(|v| v != "0") {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, expected).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    if committed != expected {
        let line = committed
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(expected.lines().count()));
        panic!(
            "{path} is not what the option table generates (first difference at line {}); \
             run `METADATAFS_BLESS=1 cargo test --lib generated` and commit the result",
            line + 1
        );
    }
}
