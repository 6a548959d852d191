//! Reading criterion's results back, for the ratio tables the benchmarks print after its report.

use std::path::{Path, PathBuf};

/// Criterion's median, in nanoseconds, of variant `name` in benchmark group `group`, as this
/// run (or, for a variant a filter left out, an earlier one) saved it.
pub fn median(group: &str, name: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(results(group).join(name).join("new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn results(group: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    Path::new(&target).join("criterion").join(group)
}
