//! Helpers shared by the benchmarks in bench/ (which include this harness): settings
//! read from the environment and the median of repeated runs.

/// The environment variable `name` as a number, or `default` when it is unset or not
/// a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (the upper one of an even count); panics on an empty `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
