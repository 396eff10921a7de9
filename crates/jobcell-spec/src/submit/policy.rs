//! HTCondor's job policy commands (`periodic_hold`, `on_exit_remove`, `max_retries`, ...):
//! checked here (each expression must parse; counts are whole numbers) and turned into the
//! attributes `condor_submit` writes, which the daemon evaluates.

use jobcell_classad::Expr;

use super::parse::bad;
use super::SubmitError;

/// How a policy command's value is read.
#[derive(Clone, Copy)]
enum Kind {
    /// A ClassAd expression, kept as written.
    Expr,
    /// A whole number >= the bound.
    Count(i64),
}

/// The policy commands (lowercase) and the attribute each becomes. `retry_until`,
/// `max_retries` and `success_exit_code` are folded into `OnExitRemove` as HTCondor does.
const COMMANDS: &[(&str, &str, Kind)] = &[
    ("periodic_hold", "PeriodicHold", Kind::Expr),
    ("periodic_hold_reason", "PeriodicHoldReason", Kind::Expr),
    ("periodic_hold_subcode", "PeriodicHoldSubCode", Kind::Expr),
    ("periodic_release", "PeriodicRelease", Kind::Expr),
    ("periodic_remove", "PeriodicRemove", Kind::Expr),
    ("on_exit_hold", "OnExitHold", Kind::Expr),
    ("on_exit_hold_reason", "OnExitHoldReason", Kind::Expr),
    ("on_exit_hold_subcode", "OnExitHoldSubCode", Kind::Expr),
    ("on_exit_remove", "OnExitRemove", Kind::Expr),
    ("max_retries", "JobMaxRetries", Kind::Count(0)),
    ("retry_until", "", Kind::Expr),
    (
        "success_exit_code",
        "JobSuccessExitCode",
        Kind::Count(i64::MIN),
    ),
    (
        "allowed_execute_duration",
        "AllowedExecuteDuration",
        Kind::Count(1),
    ),
    ("job_max_vacate_time", "JobMaxVacateTime", Kind::Count(0)),
    ("leave_in_queue", "LeaveJobInQueue", Kind::Expr),
];

/// HTCondor's `DEFAULT_JOB_MAX_RETRIES`: the retries of a job that sets `retry_until` or
/// `success_exit_code` without `max_retries`.
pub const DEFAULT_MAX_RETRIES: i64 = 2;

/// The policy commands' names (lowercase).
#[cfg(test)]
pub(super) fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|c| c.0)
}

/// Whether `lower` is a policy command.
pub(super) fn is_command(lower: &str) -> Option<&'static str> {
    COMMANDS.iter().find(|c| c.0 == lower).map(|c| c.0)
}

/// What a job's policy commands make of it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct PolicyAttributes {
    /// (attribute, ClassAd text), in the order of [`COMMANDS`].
    pub attributes: Vec<(String, String)>,
    /// `job_max_vacate_time`: the SIGTERM-to-SIGKILL grace when the job is stopped.
    pub vacate_time: Option<u64>,
}

/// Reads the policy commands through `get` (a command's expanded value and its line).
pub(super) fn read(
    get: impl Fn(&str) -> Result<Option<(String, usize)>, SubmitError>,
) -> Result<PolicyAttributes, SubmitError> {
    let mut out = PolicyAttributes::default();
    let mut retry: Option<(String, usize)> = None;
    let mut retries_set = false;
    let mut success: Option<i64> = None;
    let mut on_exit_remove = None;
    for &(cmd, attr, kind) in COMMANDS {
        let Some((value, line)) = get(cmd)? else {
            continue;
        };
        let text = value.trim();
        if text.is_empty() {
            continue;
        }
        match kind {
            Kind::Expr => {
                Expr::parse(text)
                    .map_err(|e| bad(line, cmd, text, format!("not a ClassAd expression: {e}")))?;
                match cmd {
                    "retry_until" => retry = Some((text.to_string(), line)),
                    "on_exit_remove" => on_exit_remove = Some(text.to_string()),
                    _ => out.attributes.push((attr.into(), text.into())),
                }
            }
            Kind::Count(min) => {
                let n = text
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| {
                        let want = match min {
                            i64::MIN => "a whole number".to_string(),
                            0 => "a whole number >= 0".to_string(),
                            m => format!("a whole number >= {m}"),
                        };
                        bad(line, cmd, text, format!("expected {want}"))
                    })?;
                match cmd {
                    "max_retries" => retries_set = true,
                    "success_exit_code" => success = Some(n),
                    "job_max_vacate_time" => out.vacate_time = Some(n as u64),
                    _ => {}
                }
                out.attributes.push((attr.into(), n.to_string()));
            }
        }
    }
    // condor_submit's OnExitRemove: the job leaves the queue after its retries, on success,
    // when retry_until holds, or when on_exit_remove does (appended as written, as it does).
    if retries_set || retry.is_some() || success.is_some() {
        if !retries_set {
            out.attributes
                .push(("JobMaxRetries".into(), DEFAULT_MAX_RETRIES.to_string()));
        }
        let success_code = if success.is_some() {
            "JobSuccessExitCode"
        } else {
            "0"
        };
        let mut remove = format!("NumJobCompletions > JobMaxRetries || ExitCode is {success_code}");
        if let Some((until, _)) = retry {
            // An integer is an exit code that ends the retries.
            match until.parse::<i64>() {
                Ok(code) => remove += &format!(" || ExitCode is {code}"),
                Err(_) => remove += &format!(" || {until}"),
            }
        }
        if let Some(r) = on_exit_remove {
            remove += &format!(" || {r}");
        }
        out.attributes.push(("OnExitRemove".into(), remove));
    } else if let Some(r) = on_exit_remove {
        out.attributes.push(("OnExitRemove".into(), r));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_from(cmds: &[(&str, &str)]) -> Result<PolicyAttributes, SubmitError> {
        read(|c| {
            Ok(cmds
                .iter()
                .position(|(k, _)| *k == c)
                .map(|i| (cmds[i].1.to_string(), i + 1)))
        })
    }

    fn attr<'a>(p: &'a PolicyAttributes, name: &str) -> Option<&'a str> {
        p.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn expressions_are_kept_as_written() {
        let p = read_from(&[
            ("periodic_hold", "MemoryUsage > 100"),
            ("periodic_release", " NumJobStarts < 2 "),
            ("leave_in_queue", "true"),
        ])
        .unwrap();
        assert_eq!(attr(&p, "PeriodicHold"), Some("MemoryUsage > 100"));
        assert_eq!(attr(&p, "PeriodicRelease"), Some("NumJobStarts < 2"));
        assert_eq!(attr(&p, "LeaveJobInQueue"), Some("true"));
        assert_eq!(attr(&p, "OnExitRemove"), None);
    }

    #[test]
    fn a_bad_expression_names_its_line_and_command() {
        let e = read_from(&[("periodic_hold", "true"), ("periodic_remove", "(1 +")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2: periodic_remove = (1 +:"), "{e}");
    }

    /// The attributes condor_submit 23.10 writes for the same commands.
    #[test]
    fn retries_fold_into_on_exit_remove_as_condor_submit_does() {
        let p = read_from(&[("max_retries", "3")]).unwrap();
        assert_eq!(attr(&p, "JobMaxRetries"), Some("3"));
        assert_eq!(
            attr(&p, "OnExitRemove"),
            Some("NumJobCompletions > JobMaxRetries || ExitCode is 0")
        );
        let p = read_from(&[("retry_until", "7"), ("success_exit_code", "2")]).unwrap();
        assert_eq!(attr(&p, "JobMaxRetries"), Some("2"));
        assert_eq!(attr(&p, "JobSuccessExitCode"), Some("2"));
        assert_eq!(
            attr(&p, "OnExitRemove"),
            Some("NumJobCompletions > JobMaxRetries || ExitCode is JobSuccessExitCode || ExitCode is 7")
        );
        let p = read_from(&[("max_retries", "1"), ("retry_until", "ExitCode > 5")]).unwrap();
        assert_eq!(
            attr(&p, "OnExitRemove"),
            Some("NumJobCompletions > JobMaxRetries || ExitCode is 0 || ExitCode > 5")
        );
        let p = read_from(&[("on_exit_remove", "true"), ("max_retries", "2")]).unwrap();
        assert_eq!(
            attr(&p, "OnExitRemove"),
            Some("NumJobCompletions > JobMaxRetries || ExitCode is 0 || true")
        );
        let p = read_from(&[("on_exit_remove", "ExitCode != 9")]).unwrap();
        assert_eq!(attr(&p, "OnExitRemove"), Some("ExitCode != 9"));
    }

    #[test]
    fn counts_are_whole_numbers() {
        for (cmd, v) in [
            ("max_retries", "-1"),
            ("max_retries", "two"),
            ("allowed_execute_duration", "0"),
            ("job_max_vacate_time", "1.5"),
        ] {
            let e = read_from(&[(cmd, v)]).unwrap_err().to_string();
            assert!(e.contains(cmd) && e.contains("whole number"), "{e}");
        }
        let p = read_from(&[("job_max_vacate_time", "30")]).unwrap();
        assert_eq!(p.vacate_time, Some(30));
    }
}
