//! What a benchmark's command line asks for (shared by the benches through `#[path]`): the
//! sizes to run, or nothing when a test runner only lists tests.

/// The run asked for.
pub struct Sizes {
    /// The smoke run: a small size, checked, not measured against the goals.
    pub smoke: bool,
    /// The numbers of items to run, in order.
    pub sizes: Vec<usize>,
}

/// None for `--list` (nextest or `cargo test --all-targets` asking for tests: there are
/// none). The smoke run of 200 without `--bench` (run as a test by `cargo test --bench NAME`),
/// with `--smoke`, or with the variable `smoke_env` set to 1; `--quick`: 1k and 10k;
/// otherwise 1k, 10k and 100k.
pub fn from_args(smoke_env: &str) -> Option<Sizes> {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        return None;
    }
    let smoke = has("--smoke") || !has("--bench") || std::env::var(smoke_env).is_ok_and(|v| v == "1");
    let sizes = if smoke {
        vec![200]
    } else if has("--quick") {
        vec![1_000, 10_000]
    } else {
        vec![1_000, 10_000, 100_000]
    };
    Some(Sizes { smoke, sizes })
}
