//! `analysis/checkpoint_metrics.jsonl`: one [`Row`](crate::row::Row) per checkpoint, written whole and
//! flushed. Writing the row is the last thing done for a checkpoint, so a present row means its arrays are
//! on disk too.

use std::collections::BTreeSet;
use std::path::Path;

use host::jsonl::{committed, committed_rows};

use crate::error::AnalysisError;
use crate::row::Row;

/// Steps of the complete rows already in `path`, as a resumed writer keeps them
/// ([`committed_rows`]: torn, damaged and out-of-order lines left out).
pub fn existing_steps(path: &Path) -> BTreeSet<u64> {
    committed_steps(path).0
}

/// The steps of the committed rows in `path`, and where the file first holds a line that is not one
/// ([`host::jsonl::Committed::first_damage`]), from one read of the file.
pub fn committed_steps(path: &Path) -> (BTreeSet<u64>, Option<Option<u64>>) {
    let Ok(bytes) = std::fs::read(path) else {
        return (BTreeSet::new(), None);
    };
    let file = committed(&bytes);
    let steps = file.rows.into_iter().map(|(step, _)| step).collect();
    (steps, file.first_damage)
}

/// The last committed row of `path` that parses as a [`Row`](crate::row::Row), if any.
pub fn last_row(path: &Path) -> Option<crate::row::Row> {
    let bytes = std::fs::read(path).ok()?;
    committed_rows(&bytes)
        .into_iter()
        .rev()
        .find_map(|(_, line)| serde_json::from_slice(line).ok())
}

/// Every row of an analysis JSONL file, for readers (windows, compare, report). A last line without its newline
/// is a row being written and is left out; any other line that is not a row, or a step that is not above the
/// one before (duplicated or out of order: the file was written by two processes at once), is refused with one
/// error naming the line.
pub fn read_rows(path: &Path) -> Result<Vec<Row>, AnalysisError> {
    let bytes = std::fs::read(path).map_err(|source| AnalysisError::Unreadable {
        path: path.to_owned(),
        hint: "was the run trained with --analyze (or swept)?".into(),
        source,
    })?;
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => &[][..],
    };
    let mut rows: Vec<Row> = vec![];
    for (i, line) in complete.split(|&b| b == b'\n').enumerate() {
        if complete.is_empty() {
            break;
        }
        let row: Row = serde_json::from_slice(line).map_err(|source| AnalysisError::Json {
            path: path.to_owned(),
            what: format!("line {} is not a metrics row", i + 1),
            source,
        })?;
        if let Some(last) = rows.last()
            && row.step <= last.step
        {
            return Err(AnalysisError::Invalid {
                path: path.to_owned(),
                problem: format!(
                    "line {} has step {} after step {}: the rows are duplicated or out of order (two \
                     processes wrote this run at once?); `formation train --resume` (or `sweep`) rewrites them \
                     in order",
                    i + 1,
                    row.step,
                    last.step
                ),
            });
        }
        rows.push(row);
    }
    Ok(rows)
}
