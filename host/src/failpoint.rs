//! Deterministic crash injection for the crash-safety tests: with `FORMATION_FAILPOINT=NAME` (or `NAME@STEP`)
//! in the environment, the process aborts (as a kill would stop it: no unwinding, no flush, no cleanup) the
//! first time it reaches the point `NAME` (at step `STEP`). Without the variable a point costs one environment
//! lookup. The named points are listed in `docs/crash-safety.md`; the tests kill at every one and resume.

/// The environment variable that arms a failpoint.
pub const ENV: &str = "FORMATION_FAILPOINT";

/// Aborts the process if the failpoint `name` is armed (without a step).
pub fn hit(name: &str) {
    if armed(std::env::var(ENV).ok().as_deref(), name, None) {
        abort(name);
    }
}

/// Aborts the process if the failpoint `name` is armed for `step` (or for any step).
pub fn hit_at(name: &str, step: u64) {
    if armed(std::env::var(ENV).ok().as_deref(), name, Some(step)) {
        abort(name);
    }
}

/// Whether the setting `value` (`NAME` or `NAME@STEP`) arms the point `name` reached at `step`.
fn armed(value: Option<&str>, name: &str, step: Option<u64>) -> bool {
    let Some(value) = value else {
        return false;
    };
    match value.split_once('@') {
        Some((point, at)) => point == name && at.parse::<u64>().ok() == step && step.is_some(),
        None => value == name,
    }
}

fn abort(name: &str) -> ! {
    eprintln!("formation: failpoint {name} reached, aborting");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::armed;

    #[test]
    fn a_point_fires_by_name_and_a_stepped_point_only_at_its_step() {
        assert!(!armed(None, "row-written", Some(4)));
        assert!(armed(Some("row-written"), "row-written", Some(4)));
        assert!(armed(Some("create-filled"), "create-filled", None));
        assert!(!armed(Some("row-written"), "step-file-written", Some(4)));
        assert!(armed(Some("row-written@4"), "row-written", Some(4)));
        assert!(!armed(Some("row-written@4"), "row-written", Some(8)));
        assert!(!armed(Some("row-written@4"), "row-written", None));
    }
}
