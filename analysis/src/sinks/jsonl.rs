//! `analysis/checkpoint_metrics.jsonl`: one [`Row`](crate::row::Row) per checkpoint, written whole and
//! flushed. Writing the row is the last thing done for a checkpoint, so a present row means its arrays are
//! on disk too.

use std::collections::BTreeSet;
use std::path::Path;

/// Steps of the complete rows already in `path` (a torn last line is ignored).
pub fn existing_steps(path: &Path) -> BTreeSet<u64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeSet::new();
    };
    text.lines()
        .filter_map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()?
                .get("step")?
                .as_u64()
        })
        .collect()
}

/// The last complete row of `path` that parses as a [`Row`](crate::row::Row), if any.
pub fn last_row(path: &Path) -> Option<crate::row::Row> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
}
