//! Shared by tests/queue.rs and benches/queue_drain.rs (included with `#[path]`): the SQL
//! of apalis-sqlite's own statements, to plan them against our schema.

use std::path::{Path, PathBuf};

/// The text of one of apalis-sqlite's statements, read from the crate's source: the
/// version in Cargo.lock, unpacked by cargo under $CARGO_HOME/registry/src (so a library
/// upgrade is checked against its new SQL).
pub fn library_sql(relative: &str) -> String {
    let lock =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"apalis-sqlite\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_owned())
        .expect("apalis-sqlite in Cargo.lock");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let registries =
        std::fs::read_dir(cargo_home.join("registry/src")).expect("cargo registry sources");
    for registry in registries {
        let path = registry
            .unwrap()
            .path()
            .join(format!("apalis-sqlite-{version}"))
            .join("queries")
            .join(relative);
        if let Ok(sql) = std::fs::read_to_string(&path) {
            return sql;
        }
    }
    panic!(
        "apalis-sqlite-{version}/queries/{relative} not found under {}",
        cargo_home.display()
    );
}
