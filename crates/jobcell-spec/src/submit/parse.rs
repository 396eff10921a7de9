//! Statements (`name = value`, `+Attr = value`, `queue ...`), queue items, and the jobs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::{SizeError, Unit, FILE_LIMITS};

use super::expand::{Def, Expander, Table};
use super::policy;
use super::quote::{parse_arguments, parse_environment};
use super::requests::{self, Request};
use super::{
    join, wildcard_match, CustomValue, InputLines, Submission, SubmitEnv, SubmitError, SubmitJob,
    SubmitOptions, Warning,
};

#[derive(Debug)]
enum Stmt {
    Assign {
        line: usize,
        name: String,
        value: String,
    },
    /// `+Attr = v` / `MY.Attr = v`.
    Custom {
        line: usize,
        attr: String,
        value: String,
    },
    Queue {
        line: usize,
        args: String,
        list: Option<Vec<String>>,
    },
}

fn syntax(line: usize, msg: impl Into<String>) -> SubmitError {
    SubmitError::Syntax {
        line,
        msg: msg.into(),
    }
}

const UNSUPPORTED_KEYWORDS: [&str; 7] =
    ["include", "if", "elif", "else", "endif", "error", "warning"];

/// Logical lines: comments dropped, backslash continuations joined; line numbers are 1-based
/// and name the first physical line.
fn statements(text: &str) -> Result<Vec<Stmt>, SubmitError> {
    let phys: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < phys.len() {
        let lineno = i + 1;
        let mut line = phys[i].to_string();
        i += 1;
        if line.trim_start().starts_with('#') {
            continue;
        }
        while line.ends_with('\\') {
            line.pop();
            if i >= phys.len() {
                break;
            }
            if phys[i].trim_start().starts_with('#') {
                return Err(syntax(
                    i + 1,
                    "a comment inside a continued line (the line before ends with '\\')",
                ));
            }
            line.push_str(phys[i]);
            i += 1;
        }
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let word_end = t
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(t.len());
        let word = &t[..word_end];
        let rest = &t[word_end..];
        if word.eq_ignore_ascii_case("queue") && !rest.trim_start().starts_with('=') {
            let args = rest.trim().to_string();
            let mut list = None;
            if args.ends_with('(') {
                // A list of items on the following lines, up to a line starting with ')'.
                let mut items = Vec::new();
                loop {
                    let Some(l) = phys.get(i) else {
                        return Err(syntax(
                            lineno,
                            "the item list opened here has no closing ')'",
                        ));
                    };
                    i += 1;
                    let lt = l.trim();
                    if let Some(after) = lt.strip_prefix(')') {
                        if !after.trim().is_empty() {
                            return Err(syntax(
                                i,
                                format!("unexpected '{}' after ')'", after.trim()),
                            ));
                        }
                        break;
                    }
                    if !lt.is_empty() && !lt.starts_with('#') {
                        items.push(lt.to_string());
                    }
                }
                list = Some(items);
            }
            out.push(Stmt::Queue {
                line: lineno,
                args,
                list,
            });
            continue;
        }
        if UNSUPPORTED_KEYWORDS
            .iter()
            .any(|k| word.eq_ignore_ascii_case(k))
            && !rest.trim_start().starts_with('=')
        {
            return Err(SubmitError::Unsupported {
                line: lineno,
                what: format!("'{}'", word.to_ascii_lowercase()),
                why: "submit-file include and conditionals are not implemented".into(),
            });
        }
        let Some((name, value)) = t.split_once('=') else {
            return Err(syntax(
                lineno,
                format!("expected 'name = value' or 'queue ...', found '{t}'"),
            ));
        };
        let name = name.trim();
        let value = value.trim().to_string();
        if name.ends_with('@') {
            return Err(SubmitError::Unsupported {
                line: lineno,
                what: "'@=' multi-line values".into(),
                why: "write the value on one line or use '\\' continuations".into(),
            });
        }
        let custom = name.strip_prefix('+').or_else(|| {
            // `get`, not `[..3]`: a non-ASCII name must not be cut inside a character.
            (name.len() > 3 && name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("my.")))
                .then(|| &name[3..])
        });
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        };
        match custom {
            Some(attr) => {
                if !valid(attr)
                    || attr.contains('.')
                    || attr.starts_with(|c: char| c.is_ascii_digit())
                {
                    return Err(syntax(
                        lineno,
                        format!("'{name}' is not a valid attribute name"),
                    ));
                }
                out.push(Stmt::Custom {
                    line: lineno,
                    attr: attr.to_string(),
                    value,
                });
            }
            None => {
                if !valid(name) {
                    return Err(syntax(
                        lineno,
                        format!("'{name}' is not a valid command or macro name"),
                    ));
                }
                out.push(Stmt::Assign {
                    line: lineno,
                    name: name.to_string(),
                    value,
                });
            }
        }
    }
    Ok(out)
}

/// Commands jobcell implements besides the policy and `jobcell_*` limit ones: (name as
/// written, lowercase; the command it is, aliases mapping to the main name).
const ACCEPTED: &[(&str, &str)] = &[
    ("executable", "executable"),
    ("arguments", "arguments"),
    ("environment", "environment"),
    ("getenv", "getenv"),
    ("initialdir", "initialdir"),
    ("initial_dir", "initialdir"),
    ("input", "input"),
    ("stdin", "input"),
    ("output", "output"),
    ("stdout", "output"),
    ("error", "error"),
    ("stderr", "error"),
    ("log", "log"),
    ("request_cpus", "request_cpus"),
    ("request_memory", "request_memory"),
    ("request_disk", "request_disk"),
    ("transfer_input_files", "transfer_input_files"),
    ("should_transfer_files", "should_transfer_files"),
    ("when_to_transfer_output", "when_to_transfer_output"),
    ("priority", "priority"),
    ("hold", "hold"),
    ("universe", "universe"),
    ("jobcell_image", "jobcell_image"),
    ("container_image", "container_image"),
    ("allowed_job_duration", "allowed_job_duration"),
    ("requirements", "requirements"),
    ("transfer_executable", "transfer_executable"),
    ("batch_name", "batch_name"),
    ("job_batch_name", "batch_name"),
];

/// The command `lower` (a lowercase name) is, if jobcell implements it.
fn command_name(lower: &str) -> Option<&'static str> {
    if let Some(c) = ACCEPTED.iter().find(|c| c.0 == lower) {
        return Some(c.1);
    }
    policy::is_command(lower).or_else(|| {
        FILE_LIMITS
            .iter()
            .find_map(|f| f.submit.filter(|c| *c == lower))
    })
}

/// What the parser does with a submit command.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Handling {
    Accepted,
    Ignored,
    Refused,
}

/// Every command name the parser knows (aliases included) and what it does with it; names
/// matched by a refused prefix are given as `prefix<name>`.
#[cfg(test)]
pub(super) fn known_commands() -> Vec<(String, Handling)> {
    let accepted = ACCEPTED
        .iter()
        .map(|c| c.0)
        .chain(policy::command_names())
        .chain(FILE_LIMITS.iter().filter_map(|f| f.submit));
    accepted
        .map(|c| (c.to_string(), Handling::Accepted))
        .chain(IGNORED.iter().map(|c| (c.to_string(), Handling::Ignored)))
        .chain(
            UNSUPPORTED
                .iter()
                .map(|c| (c.to_string(), Handling::Refused)),
        )
        .chain(
            UNSUPPORTED_PREFIXES
                .iter()
                .map(|p| (format!("{p}<name>"), Handling::Refused)),
        )
        .collect()
}

/// HTCondor commands that matter only in a pool; accepted with a warning.
const IGNORED: &[&str] = &[
    "notification",
    "notify_user",
    "email_attributes",
    "rank",
    "stream_output",
    "stream_error",
    "transfer_output_files",
    "transfer_output_remaps",
    "accounting_group",
    "accounting_group_user",
    "description",
    "nice_user",
    "copy_to_spool",
    "coresize",
    "image_size",
    "max_idle",
    "max_materialize",
    "concurrency_limits",
    "log_xml",
    "want_graceful_removal",
    "kill_sig",
    "hold_kill_sig",
    "remove_kill_sig",
    "job_lease_duration",
    "submit_event_notes",
    "preserve_relative_executable",
    "job_machine_attrs",
    "job_ad_information_attrs",
    "dagman_log",
    "concurrency_limits_expr",
    "container_is_common",
    "dont_encrypt_input_files",
    "dont_encrypt_output_files",
    "erase_output_and_error_on_restart",
    "job_machine_attrs_history_length",
    "keep_claim_idle",
    "kill_sig_timeout",
    "manifest",
    "manifest_dir",
    "match_list_length",
    "max_job_retirement_time",
    "max_transfer_input_mb",
    "max_transfer_output_mb",
    "mount_under_scratch",
    "skip_filechecks",
    "skip_if_dataflow",
    "starter_debug",
    "starter_log",
    "stream_input",
    "submit_event_notes_attrs",
    "submit_event_user_notes",
    "transfer_input",
    "transfer_output",
    "transfer_error",
    "ulog_execute_attrs",
    "wantnametag",
];

/// HTCondor commands jobcell cannot honour on one node: an error.
const UNSUPPORTED: &[&str] = &[
    "grid_resource",
    "docker_image",
    "docker_network_type",
    "container_service_names",
    "machine_count",
    "request_gpus",
    "require_gpus",
    "output_destination",
    "transfer_plugins",
    "cron_minute",
    "cron_hour",
    "cron_day_of_month",
    "cron_month",
    "cron_day_of_week",
    "cron_prep_time",
    "cron_window",
    "deferral_time",
    "deferral_window",
    "deferral_prep_time",
    "x509userproxy",
    "use_x509userproxy",
    "use_oauth_services",
    "vm_type",
    "vm_memory",
    "vm_disk",
    "vm_networking",
    "jar_files",
    "java_vm_args",
    "remote_initialdir",
    "run_as_owner",
    "load_profile",
    "buffer_size",
    "buffer_block_size",
    "encrypt_input_files",
    "encrypt_output_files",
    "next_job_start_delay",
    "want_remote_io",
    "stack_size",
    "globus_rsl",
    "cloud_label_names",
    "transfer_container",
    "docker_override_entrypoint",
    "checkpoint_exit_code",
    "transfer_checkpoint_files",
    "arc_application",
    "arc_data_staging",
    "arc_resources",
    "arc_rte",
    "aws_access_key_id_file",
    "aws_region",
    "aws_secret_access_key_file",
    "azure_admin_key",
    "azure_admin_username",
    "azure_auth_file",
    "azure_image",
    "azure_location",
    "azure_size",
    "batch_extra_submit_args",
    "batch_project",
    "batch_queue",
    "batch_runtime",
    "checkpoint_destination",
    "container_target_dir",
    "cuda_version",
    "delegate_job_gsi_credentials_lifetime",
    "docker_pull_policy",
    "ec2_access_key_id",
    "ec2_ami_id",
    "ec2_availability_zone",
    "ec2_block_device_mapping",
    "ec2_ebs_volumes",
    "ec2_elastic_ip",
    "ec2_iam_profile_arn",
    "ec2_iam_profile_name",
    "ec2_instance_type",
    "ec2_keypair",
    "ec2_keypair_file",
    "ec2_parameter_names",
    "ec2_secret_access_key",
    "ec2_security_groups",
    "ec2_security_ids",
    "ec2_spot_price",
    "ec2_tag_names",
    "ec2_user_data",
    "ec2_user_data_file",
    "ec2_vpc_ip",
    "ec2_vpc_subnet",
    "encrypt_execute_directory",
    "gce_account",
    "gce_auth_file",
    "gce_image",
    "gce_json_file",
    "gce_machine_type",
    "gce_metadata",
    "gce_metadata_file",
    "gce_preemptible",
    "gpus_maximum_capability",
    "gpus_minimum_capability",
    "gpus_minimum_memory",
    "gpus_minimum_runtime",
    "gs_access_key_id_file",
    "gs_secret_access_key_file",
    "noop_job",
    "noop_job_exit_code",
    "noop_job_exit_signal",
    "output_directory",
    "periodic_vacate",
    "preserve_relative_paths",
    "primary_unix_group",
    "public_input_files",
    "rendezvousdir",
    "retry_request_disk",
    "retry_request_memory",
    "retry_request_memory_increase",
    "retry_request_memory_max",
    "s3_access_key_id_file",
    "s3_secret_access_key_file",
    "scitokens_file",
    "shell",
    "use_scitokens",
    "vm_checkpoint",
    "vm_macaddr",
    "vm_networking_type",
    "vm_no_output_vm",
    "want_job_networking",
    "xen_initrd",
    "xen_kernel",
    "xen_kernel_params",
    "xen_root",
];

/// Families of HTCondor commands named by a prefix (custom resource requests, cloud labels,
/// EC2 parameters and tags): refused like [`UNSUPPORTED`].
const UNSUPPORTED_PREFIXES: &[&str] = &["request_", "cloud_label_", "ec2_parameter_", "ec2_tag_"];

/// One row of queue items split over the loop variables (HTCondor's `split_item`): each
/// variable but the last takes one token (separated by a comma or blank), the last takes the
/// rest of the row.
fn split_item(row: &str, nvars: usize) -> Vec<String> {
    if row.contains('\x1f') {
        let mut v: Vec<String> = row.split('\x1f').map(|s| s.trim().to_string()).collect();
        v.resize(nvars, String::new());
        return v;
    }
    let mut vals = Vec::with_capacity(nvars);
    let mut data = row.trim_start_matches([' ', '\t']);
    for k in 0..nvars {
        if k == nvars - 1 {
            vals.push(data.trim_end().to_string());
            break;
        }
        match data.find([',', ' ', '\t']) {
            Some(p) => {
                vals.push(data[..p].to_string());
                data = data[p + 1..].trim_start_matches([' ', '\t']);
            }
            None => {
                vals.push(data.trim_end().to_string());
                data = "";
            }
        }
    }
    vals.resize(nvars, String::new());
    vals
}

struct QueueSpec {
    count: u64,
    /// Loop variables as written; empty means the implicit `Item`.
    vars: Vec<String>,
    /// One entry per item row; `None` for a bare `queue [N]`.
    rows: Option<Vec<String>>,
}

fn find_keyword(args: &str) -> Option<(usize, &'static str)> {
    let lower = args.to_ascii_lowercase();
    let mut best: Option<(usize, &'static str)> = None;
    for kw in ["in", "from", "matching"] {
        let mut start = 0;
        while let Some(p) = lower[start..].find(kw) {
            let p = start + p;
            let before_ok = p == 0 || lower[..p].ends_with([' ', '\t', ',']);
            let after = &lower[p + kw.len()..];
            let after_ok = after.is_empty() || after.starts_with([' ', '\t', '(']);
            if before_ok && after_ok {
                if best.is_none_or(|(b, _)| p < b) {
                    best = Some((p, kw));
                }
                break;
            }
            start = p + kw.len();
        }
    }
    best
}

fn parse_count(s: &str, line: usize) -> Result<u64, SubmitError> {
    s.parse::<u64>().map_err(|_| SubmitError::BadValue {
        line,
        command: "queue".into(),
        value: s.into(),
        // condor_submit refuses `queue 1 # note` too ("Invalid Queue count expression"): a
        // comment is a line of its own.
        msg: if s.contains('#') {
            "the count must be a whole number >= 0 (a '#' comment must be on a line of its own)"
                .into()
        } else {
            "the count must be a whole number >= 0".into()
        },
    })
}

fn tokens(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split([',', ' ', '\t'])
        .filter(|t| !t.is_empty())
        .map(String::from)
}

fn queue_spec(
    args: &str,
    list: Option<Vec<String>>,
    line: usize,
    ex: &Expander,
    env: &dyn SubmitEnv,
    warnings: &RefCell<Vec<Warning>>,
) -> Result<QueueSpec, SubmitError> {
    let args = ex.expand(args, line)?;
    let args = args.trim();
    let Some((kpos, kw)) = find_keyword(args) else {
        if list.is_some() {
            return Err(syntax(
                line,
                "an item list needs 'in', 'from' or 'matching' before '('",
            ));
        }
        let count = if args.is_empty() {
            1
        } else {
            parse_count(args, line)?
        };
        return Ok(QueueSpec {
            count,
            vars: vec![],
            rows: None,
        });
    };
    let head = args[..kpos].trim();
    let mut rest = args[kpos + kw.len()..].trim();
    let mut head_tokens = tokens(head).peekable();
    let mut count = 1;
    if let Some(first) = head_tokens.peek() {
        if first.starts_with(|c: char| c.is_ascii_digit()) {
            count = parse_count(first, line)?;
            head_tokens.next();
        }
    }
    let vars: Vec<String> = head_tokens.collect();
    for v in &vars {
        if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(syntax(
                line,
                format!("'{v}' is not a valid loop variable name"),
            ));
        }
    }
    // The item text: a multi-line list, or `( ... )` on this line, or the rest of the line.
    let inline = if list.is_none() && rest.starts_with('(') {
        let Some(close) = rest.rfind(')') else {
            return Err(syntax(
                line,
                format!("the item list '{rest}' has no closing ')'"),
            ));
        };
        if !rest[close + 1..].trim().is_empty() {
            return Err(syntax(
                line,
                format!("unexpected '{}' after ')'", rest[close + 1..].trim()),
            ));
        }
        let inner = rest[1..close].to_string();
        rest = "";
        Some(inner)
    } else {
        None
    };
    if list.is_some() {
        rest = rest.trim_end_matches('(').trim();
    }
    let rows: Vec<String> = match kw {
        "in" => match (&list, &inline) {
            (Some(l), _) => l
                .iter()
                .flat_map(|r| tokens(r).collect::<Vec<_>>())
                .collect(),
            (None, Some(s)) => tokens(s).collect(),
            (None, None) => tokens(rest).collect(),
        },
        "from" => match (&list, &inline) {
            (Some(l), _) => l.clone(),
            (None, Some(s)) => blank_rows(vec![s.trim().to_string()], line, warnings),
            (None, None) => {
                if rest.is_empty() {
                    return Err(syntax(
                        line,
                        "'queue ... from' needs a file name or a ( list )",
                    ));
                }
                if rest.ends_with('|') {
                    return Err(SubmitError::Unsupported {
                        line,
                        what: "'queue ... from COMMAND |'".into(),
                        why: "running a command to make items; write them to a file".into(),
                    });
                }
                let text = env
                    .read_file(Path::new(rest))
                    .map_err(|e| SubmitError::Read {
                        line,
                        path: rest.to_string(),
                        msg: e.to_string(),
                    })?;
                // Unlike inline lists, a '#' line of an item file is an item (as in HTCondor).
                let rows: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
                blank_rows(rows, line, warnings)
            }
        },
        _ => {
            let text = match (&list, &inline) {
                (Some(l), _) => l.join(" "),
                (None, Some(s)) => s.clone(),
                (None, None) => rest.to_string(),
            };
            let mut pats: Vec<String> = tokens(&text).collect();
            let mut mode = "any";
            if let Some(first) = pats.first() {
                let f = first.to_ascii_lowercase();
                if f == "files" || f == "dirs" {
                    mode = if f == "files" { "files" } else { "dirs" };
                    pats.remove(0);
                }
            }
            if pats.is_empty() {
                return Err(syntax(
                    line,
                    "'queue ... matching' needs at least one pattern",
                ));
            }
            let mut items = Vec::new();
            for p in &pats {
                let found: Vec<String> = env
                    .glob(p)
                    .into_iter()
                    .filter_map(|m| match (mode, m.ends_with('/')) {
                        ("files", true) => None,
                        ("dirs", false) => None,
                        _ => Some(m),
                    })
                    .collect();
                if found.is_empty() {
                    warnings.borrow_mut().push(Warning {
                        line,
                        msg: format!(
                            "'{p}' does not match any {}",
                            if mode == "dirs" { "directory" } else { "file" }
                        ),
                    });
                }
                for f in found {
                    if !items.contains(&f) {
                        items.push(f);
                    }
                }
            }
            items
        }
    };
    Ok(QueueSpec {
        count,
        vars,
        rows: Some(rows),
    })
}

/// Drop blank item rows, with a warning: HTCondor 23.10 makes a job for one but gives it the
/// previous row's values, which is surely not what anyone wants.
fn blank_rows(rows: Vec<String>, line: usize, warnings: &RefCell<Vec<Warning>>) -> Vec<String> {
    let n = rows.len();
    let rows: Vec<String> = rows.into_iter().filter(|r| !r.is_empty()).collect();
    if rows.len() != n {
        warnings.borrow_mut().push(Warning {
            line,
            msg: format!("{} blank item line(s) skipped", n - rows.len()),
        });
    }
    rows
}

/// An HTCondor size in `unit`s, rounded up (`crate::parse_condor_size`), with the submit
/// file's wording on error.
pub(super) fn condor_size(s: &str, unit: Unit) -> Result<u64, String> {
    crate::parse_condor_size(s, unit, unit).map_err(|e| match e {
        SizeError::TooLarge(_) => format!("'{s}' is too large"),
        _ => format!(
            "'{s}' is not a size (examples: 2048, 2G, 512MB; bare numbers are in {})",
            if unit == Unit::MiB { "MiB" } else { "KiB" }
        ),
    })
}

/// A ClassAd boolean as HTCondor reads `hold`: true/false, or a number (non-zero is true);
/// empty is false. Other expressions are not evaluated.
fn parse_bool(s: &str) -> Option<bool> {
    let t = s.trim().to_ascii_lowercase();
    match t.as_str() {
        "" | "false" => Some(false),
        "true" => Some(true),
        _ => t.parse::<f64>().ok().map(|n| n != 0.0),
    }
}

/// A custom attribute's value: a ClassAd literal, or an expression checked for balanced
/// quotes and parentheses (a full ClassAd parser is out of scope).
fn custom_value(v: &str) -> Result<CustomValue, String> {
    let t = v.trim();
    if t.is_empty() {
        return Err("empty value".into());
    }
    if let Some(body) = t.strip_prefix('"') {
        if let Some(s) = string_literal(body) {
            return Ok(CustomValue::String(s));
        }
    }
    if let Ok(i) = t.parse::<i64>() {
        return Ok(CustomValue::Int(i));
    }
    if t.contains(['.', 'e', 'E']) && t.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        if let Ok(f) = t.parse::<f64>() {
            return Ok(CustomValue::Real(f));
        }
    }
    match t.to_ascii_lowercase().as_str() {
        "true" => return Ok(CustomValue::Bool(true)),
        "false" => return Ok(CustomValue::Bool(false)),
        _ => {}
    }
    let mut depth = 0i32;
    let mut chars = t.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    None => return Err("unterminated string".into()),
                    Some('\\') => {
                        chars.next();
                    }
                    Some('"') => break,
                    _ => {}
                }
            },
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced parentheses".into());
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    if t.ends_with([
        '+', '-', '*', '/', '&', '|', '<', '>', '=', '!', '?', ':', ',',
    ]) {
        return Err("the expression is incomplete".into());
    }
    Ok(CustomValue::Expr {
        expr: t.to_string(),
    })
}

/// A whole ClassAd string literal (after its opening quote) with `\` escapes, or None.
fn string_literal(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c => out.push(c),
            },
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// Parse a submit description. Nothing is queued unless every statement is valid: the caller
/// gets all the jobs or one error naming the line at fault.
pub fn parse_submit(
    text: &str,
    env: &dyn SubmitEnv,
    opts: &SubmitOptions,
) -> Result<Submission, SubmitError> {
    let stmts = statements(text)?;
    let mut table = Table::default();
    // Custom attributes in first-definition order: lowercase -> (name as last written, value, line).
    let mut custom: Vec<(String, String, String, usize)> = Vec::new();
    let used = RefCell::new(HashSet::new());
    let warnings = RefCell::new(Vec::new());
    let warned_undefined = RefCell::new(HashSet::new());
    let rng = Cell::new(env.random_u64() | 1);
    let cwd = env.cwd().to_string_lossy().into_owned();
    let mut jobs = Vec::new();
    let mut next_proc = 0u64;
    let mut last_queue = None;

    // Commands are checked once, where they are defined.
    for s in &stmts {
        if let Stmt::Assign { line, name, .. } = s {
            let lower = name.to_ascii_lowercase();
            if command_name(&lower).is_some() {
                continue;
            }
            if UNSUPPORTED.contains(&lower.as_str())
                || UNSUPPORTED_PREFIXES.iter().any(|p| lower.starts_with(p))
            {
                return Err(SubmitError::Unsupported {
                    line: *line,
                    what: format!("'{name}'"),
                    why: "it needs an HTCondor pool or a feature jobcell does not have; jobcell runs \
                          vanilla and container jobs on one node"
                        .into(),
                });
            }
            if IGNORED.contains(&lower.as_str()) {
                warnings.borrow_mut().push(Warning {
                    line: *line,
                    msg: format!("'{name}' has no effect on a single jobcell node; ignored"),
                });
            }
        }
    }

    for s in stmts {
        match s {
            Stmt::Assign { line, name, value } => table.define(&name, &value, line)?,
            Stmt::Custom { line, attr, value } => {
                let lower = attr.to_ascii_lowercase();
                table.define(&format!("MY.{attr}"), &value, line)?;
                let value = table.get(&format!("my.{lower}")).unwrap().value.clone();
                match custom.iter_mut().find(|c| c.0 == lower) {
                    Some(c) => {
                        c.1 = attr;
                        c.2 = value;
                        c.3 = line;
                    }
                    None => custom.push((lower, attr, value, line)),
                }
            }
            Stmt::Queue { line, args, list } => {
                last_queue = Some(line);
                let base = Expander {
                    table: &table,
                    live: HashMap::new(),
                    builtins: HashMap::from([
                        ("cluster".into(), opts.cluster_id.to_string()),
                        ("clusterid".into(), opts.cluster_id.to_string()),
                    ]),
                    env,
                    used: &used,
                    warnings: &warnings,
                    warned_undefined: &warned_undefined,
                    rng: &rng,
                };
                let q = queue_spec(&args, list, line, &base, env, &warnings)?;
                let implicit = q.vars.is_empty();
                let vars = if implicit {
                    vec!["Item".to_string()]
                } else {
                    q.vars.clone()
                };
                let rows: Vec<Option<&String>> = match &q.rows {
                    None => vec![None],
                    Some(r) => r.iter().map(Some).collect(),
                };
                // Each command's definition in effect here (the last one, aliases included).
                let mut cmds: HashMap<&'static str, &Def> = HashMap::new();
                for d in table.defs.values() {
                    if let Some(c) = command_name(&d.name.to_ascii_lowercase()) {
                        if cmds.get(c).is_none_or(|p| p.line < d.line) {
                            cmds.insert(c, d);
                        }
                    }
                }
                // Refused before any of them is made: `queue 1000000000` must not fill memory.
                let total = (rows.len() as u64)
                    .saturating_mul(q.count)
                    .saturating_add(next_proc);
                if total > super::MAX_CLUSTER_JOBS {
                    return Err(SubmitError::TooManyJobs { line });
                }
                let before = jobs.len();
                for (index, row) in rows.iter().enumerate() {
                    let values = row.map(|r| split_item(r, vars.len()));
                    for step in 0..q.count {
                        let mut ex = Expander {
                            live: base.live.clone(),
                            builtins: base.builtins.clone(),
                            ..base
                        };
                        let proc = next_proc;
                        for (k, v) in [
                            ("process", proc.to_string()),
                            ("procid", proc.to_string()),
                            ("step", step.to_string()),
                            ("itemindex", index.to_string()),
                            ("row", index.to_string()),
                        ] {
                            ex.builtins.insert(k.into(), v);
                        }
                        match &values {
                            Some(vals) => {
                                for (var, val) in vars.iter().zip(vals) {
                                    ex.live.insert(var.to_ascii_lowercase(), val.clone());
                                }
                            }
                            None => {
                                ex.live.insert("item".into(), String::new());
                            }
                        }
                        jobs.push(make_job(&ex, &cmds, &custom, &cwd, env, opts, proc, line)?);
                        next_proc += 1;
                    }
                }
                if jobs.len() == before {
                    return Err(SubmitError::EmptyQueue { line });
                }
            }
        }
    }
    let Some(_) = last_queue else {
        return Err(SubmitError::NoQueue);
    };

    // Names that are neither commands nor referenced: most likely typos.
    let used = used.into_inner();
    let mut defs: Vec<_> = table.defs.values().collect();
    defs.sort_by_key(|d| d.line);
    for d in defs {
        let lower = d.name.to_ascii_lowercase();
        if command_name(&lower).is_none()
            && !lower.starts_with("my.")
            && !IGNORED.contains(&lower.as_str())
            && !used.contains(&lower)
        {
            warnings.borrow_mut().push(Warning {
                line: d.line,
                msg: format!(
                    "'{}' is not a submit command jobcell knows, and no $({}) uses it",
                    d.name, d.name
                ),
            });
        }
    }
    let mut warnings = warnings.into_inner();
    warnings.sort_by_key(|w| w.line);
    Ok(Submission { jobs, warnings })
}

/// One job of a `queue` statement: its commands' values as they are expanded for it.
struct JobCommands<'a, 'e> {
    ex: &'a Expander<'e>,
    cmds: &'a HashMap<&'static str, &'a Def>,
}

/// A command's value that jobcell refuses, naming the line, command and value.
pub(super) fn bad(line: usize, cmd: &str, value: &str, msg: String) -> SubmitError {
    SubmitError::BadValue {
        line,
        command: cmd.into(),
        value: value.into(),
        msg,
    }
}

/// HTCondor's file-transfer commands, checked against each other.
struct Transfer {
    input_files: Vec<String>,
    should_transfer_files: String,
    when_to_transfer_output: Option<String>,
}

impl JobCommands<'_, '_> {
    /// The expanded value of a command, with the line it was defined on.
    fn get(&self, cmd: &str) -> Result<Option<(String, usize)>, SubmitError> {
        match self.cmds.get(cmd) {
            Some(d) => Ok(Some((self.ex.expand(&d.value, d.line)?, d.line))),
            None => Ok(None),
        }
    }

    /// `universe`: vanilla (or unset) only.
    fn check_universe(&self) -> Result<(), SubmitError> {
        let Some((u, line)) = self.get("universe")? else {
            return Ok(());
        };
        let lu = u.trim().to_ascii_lowercase();
        // The container universe is a vanilla job in an image (container_image).
        if lu == "vanilla" || lu == "container" || lu.is_empty() {
            return Ok(());
        }
        let why = if lu == "docker" {
            "use container_image = NAME (or jobcell_image) to run in an image".to_string()
        } else {
            "jobcell runs vanilla jobs".to_string()
        };
        Err(SubmitError::Unsupported {
            line,
            what: format!("universe '{u}'"),
            why,
        })
    }

    /// `executable`, absolute, and its line; a job without one is an error at its `queue`
    /// line, except in an image, which then runs its Entrypoint + Cmd (an empty executable),
    /// as `docker run IMAGE` does.
    fn executable(
        &self,
        cwd: &str,
        queue_line: usize,
        in_image: bool,
    ) -> Result<(String, usize), SubmitError> {
        match self.get("executable")? {
            Some((e, line)) if !e.trim().is_empty() => Ok((join(cwd, e.trim()), line)),
            _ if in_image => Ok((String::new(), queue_line)),
            _ => Err(SubmitError::NoExecutable { line: queue_line }),
        }
    }

    /// `transfer_executable` (default true): false names a program already on the node.
    fn transfer_executable(&self) -> Result<bool, SubmitError> {
        match self.get("transfer_executable")? {
            Some((t, line)) => parse_bool(&t).ok_or_else(|| {
                bad(
                    line,
                    "transfer_executable",
                    &t,
                    "expected true or false".into(),
                )
            }),
            None => Ok(true),
        }
    }

    /// `arguments`, and whether they were in the old (V1) syntax.
    fn arguments(&self) -> Result<(Vec<String>, bool), SubmitError> {
        match self.get("arguments")? {
            Some((a, line)) => parse_arguments(&a).map_err(|m| bad(line, "arguments", &a, m)),
            None => Ok((Vec::new(), false)),
        }
    }

    /// `getenv` (the submitter's variables) and then `environment` over them.
    fn environment(&self, env: &dyn SubmitEnv) -> Result<BTreeMap<String, String>, SubmitError> {
        let mut environment = BTreeMap::new();
        let env_cmd = self.get("environment")?;
        // HTCondor quirk, kept for equal results: next to an `environment` command, imported
        // variables whose value holds the old syntax's ';' separator are left out.
        let importable = |v: &String| env_cmd.is_none() || !v.contains(';');
        if let Some((g, _)) = self.get("getenv")? {
            // HTCondor: true/1 imports everything, false/0/empty nothing, anything else is a
            // list of names (with `*` wildcards, matched case-insensitively; `yes` is a name).
            match g.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => {
                    environment.extend(env.env_vars().into_iter().filter(|(_, v)| importable(v)))
                }
                "false" | "0" | "" => {}
                _ => {
                    let pats: Vec<String> = tokens(&g).map(|p| p.to_ascii_lowercase()).collect();
                    for (k, v) in env.env_vars() {
                        let lk = k.to_ascii_lowercase();
                        if importable(&v) && pats.iter().any(|p| wildcard_match(p, &lk)) {
                            environment.insert(k, v);
                        }
                    }
                }
            }
        }
        if let Some((e, line)) = env_cmd {
            parse_environment(&e, &mut environment).map_err(|m| bad(line, "environment", &e, m))?;
        }
        Ok(environment)
    }

    /// `initialdir`, absolute and an existing directory; else the submitter's cwd.
    fn initialdir(&self, cwd: &str, env: &dyn SubmitEnv) -> Result<String, SubmitError> {
        match self.get("initialdir")? {
            Some((d, line)) if !d.trim().is_empty() => {
                let iwd = join(cwd, d.trim());
                if !env.is_dir(Path::new(&iwd)) {
                    return Err(bad(
                        line,
                        "initialdir",
                        &d,
                        format!("no such directory: {iwd}"),
                    ));
                }
                Ok(iwd)
            }
            _ => Ok(cwd.to_string()),
        }
    }

    /// A path command (`input`, `output`, ...) relative to the job's `initialdir`.
    fn path(&self, cmd: &str, initialdir: &str) -> Result<Option<String>, SubmitError> {
        Ok(self
            .get(cmd)?
            .map(|(p, _)| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .map(|p| join(initialdir, &p)))
    }

    /// A request command (`request_cpus`, `request_memory`, `request_disk`) as written: sizes
    /// read in `unit`.
    fn request(&self, cmd: &str, unit: Option<Unit>) -> Result<Request, SubmitError> {
        match self.get(cmd)? {
            Some((v, line)) => Request::read(cmd, &v, line, unit),
            None => Ok(Request::Unset),
        }
    }

    /// A size command in HTCondor's units: `unit` for a bare number and for the result.
    fn size(&self, cmd: &str, unit: Unit) -> Result<Option<u64>, SubmitError> {
        match self.get(cmd)? {
            Some((v, line)) => condor_size(&v, unit)
                .map(Some)
                .map_err(|m| bad(line, cmd, &v, m)),
            None => Ok(None),
        }
    }

    /// The `jobcell_*` commands of the limits that are one number in one cgroup file
    /// ([`FILE_LIMITS`]), in bytes where they are sizes.
    fn file_limits(&self) -> Result<BTreeMap<&'static str, u64>, SubmitError> {
        let mut limits = BTreeMap::new();
        for f in FILE_LIMITS {
            let Some(cmd) = f.submit else { continue };
            let value = match f.unit {
                Some(unit) => self
                    .size(cmd, unit)?
                    .map(|n| n.saturating_mul(unit.factor())),
                None => match self.get(cmd)? {
                    Some((v, line)) => Some(
                        v.trim()
                            .parse::<u64>()
                            .map_err(|_| bad(line, cmd, &v, "expected a whole number".into()))?,
                    ),
                    None => None,
                },
            };
            if let Some(n) = value {
                limits.insert(f.field, n);
            }
        }
        Ok(limits)
    }

    /// `priority`: a whole number or an expression evaluating to one, 0 when unset.
    fn priority(&self) -> Result<i64, SubmitError> {
        match self.get("priority")? {
            Some((p, line)) => requests::priority(&p, line),
            None => Ok(0),
        }
    }

    /// `requirements`: a ClassAd expression, unparsed in its normal form (the daemon
    /// evaluates it against the node's machine ad).
    fn requirements(&self) -> Result<Option<String>, SubmitError> {
        let Some((r, line)) = self.get("requirements")? else {
            return Ok(None);
        };
        if r.trim().is_empty() {
            return Ok(None);
        }
        let e = jobcell_classad::Expr::parse(r.trim()).map_err(|e| {
            bad(
                line,
                "requirements",
                &r,
                format!("not a ClassAd expression: {e}"),
            )
        })?;
        Ok(Some(e.to_string()))
    }

    /// `allowed_job_duration`: whole seconds > 0.
    fn allowed_job_duration(&self) -> Result<Option<u64>, SubmitError> {
        let Some((d, line)) = self.get("allowed_job_duration")? else {
            return Ok(None);
        };
        d.trim()
            .parse::<u64>()
            .ok()
            .filter(|d| *d > 0)
            .map(Some)
            .ok_or_else(|| {
                bad(
                    line,
                    "allowed_job_duration",
                    &d,
                    "expected a whole number of seconds > 0 (jobcell does not evaluate expressions)"
                        .into(),
                )
            })
    }

    /// `hold`: true or false, false when unset.
    fn held(&self) -> Result<bool, SubmitError> {
        match self.get("hold")? {
            Some((h, line)) => parse_bool(&h).ok_or_else(|| {
                bad(
                    line,
                    "hold",
                    &h,
                    "expected true or false (jobcell does not evaluate expressions)".into(),
                )
            }),
            None => Ok(false),
        }
    }

    /// `transfer_input_files`, `should_transfer_files` and `when_to_transfer_output`, with
    /// HTCondor's consistency rules between them.
    fn transfer(&self, queue_line: usize) -> Result<Transfer, SubmitError> {
        let input_files = match self.get("transfer_input_files")? {
            Some((t, _)) => t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => Vec::new(),
        };
        let (mut should_transfer_files, stf_line) = match self.get("should_transfer_files")? {
            Some((s, line)) => {
                let u = s.trim().to_ascii_uppercase();
                if !["YES", "NO", "IF_NEEDED"].contains(&u.as_str()) {
                    return Err(bad(
                        line,
                        "should_transfer_files",
                        &s,
                        "expected YES, NO or IF_NEEDED".into(),
                    ));
                }
                (u, line)
            }
            None => ("IF_NEEDED".into(), 0),
        };
        let when = self.get("when_to_transfer_output")?;
        let when_to_transfer_output = if should_transfer_files == "NO" {
            if let Some((w, line)) = when {
                return Err(bad(
                    line,
                    "when_to_transfer_output",
                    &w,
                    "contradicts should_transfer_files = NO".into(),
                ));
            }
            if let Some((t, line)) = self.get("transfer_input_files")? {
                return Err(bad(
                    line,
                    "transfer_input_files",
                    &t,
                    "files to transfer, but should_transfer_files = NO".into(),
                ));
            }
            None
        } else {
            let (u, line) = match when {
                Some((w, line)) => {
                    let u = w.trim().to_ascii_uppercase();
                    if !["ON_EXIT", "ON_EXIT_OR_EVICT", "ON_SUCCESS"].contains(&u.as_str()) {
                        return Err(bad(
                            line,
                            "when_to_transfer_output",
                            &w,
                            "expected ON_EXIT, ON_EXIT_OR_EVICT or ON_SUCCESS".into(),
                        ));
                    }
                    (u, line)
                }
                None => ("ON_EXIT".to_string(), queue_line),
            };
            if u == "ON_EXIT_OR_EVICT" && stf_line == 0 {
                // The default IF_NEEDED gives way to an explicit ON_EXIT_OR_EVICT.
                should_transfer_files = "YES".into();
            } else if u == "ON_EXIT_OR_EVICT" && should_transfer_files == "IF_NEEDED" {
                return Err(bad(
                    line.max(stf_line),
                    "when_to_transfer_output",
                    &u,
                    "ON_EXIT_OR_EVICT needs should_transfer_files = YES (HTCondor refuses IF_NEEDED with it)".into(),
                ));
            }
            Some(u)
        };
        Ok(Transfer {
            input_files,
            should_transfer_files,
            when_to_transfer_output,
        })
    }

    /// The `+Attr` custom attributes, and the image the job runs in: `jobcell_image`, else
    /// `+RequestedChroot`.
    fn custom_and_image(
        &self,
        custom: &[(String, String, String, usize)],
    ) -> Result<(BTreeMap<String, CustomValue>, Option<String>), SubmitError> {
        let mut custom_attributes = BTreeMap::new();
        let mut image = None;
        for (lower, attr, value, line) in custom {
            let v = self.ex.expand(value, *line)?;
            let cv = custom_value(&v).map_err(|m| bad(*line, &format!("+{attr}"), &v, m))?;
            if lower == "requestedchroot" {
                if let CustomValue::String(s) = &cv {
                    image = Some(s.clone());
                }
            }
            custom_attributes.insert(attr.clone(), cv);
        }
        // condor_q's batch view groups jobs by it.
        if let Some((name, _)) = self.get("batch_name")? {
            if !name.trim().is_empty() {
                custom_attributes.insert(
                    "JobBatchName".to_string(),
                    CustomValue::String(name.trim().to_string()),
                );
            }
        }
        // `container_image` names an image of the node's store, as `jobcell_image` does.
        for key in ["container_image", "jobcell_image"] {
            if let Some((i, _)) = self.get(key)? {
                if !i.trim().is_empty() {
                    image = Some(i.trim().to_string());
                }
            }
        }
        Ok((custom_attributes, image))
    }
}

/// One job of a `queue` statement. Its commands are read in a fixed order, so a file with
/// several bad values always reports the same one first.
#[allow(clippy::too_many_arguments)]
fn make_job(
    ex: &Expander,
    cmds: &HashMap<&'static str, &Def>,
    custom: &[(String, String, String, usize)],
    cwd: &str,
    env: &dyn SubmitEnv,
    opts: &SubmitOptions,
    proc: u64,
    queue_line: usize,
) -> Result<SubmitJob, SubmitError> {
    let c = JobCommands { ex, cmds };
    c.check_universe()?;
    let (custom_attributes, image) = c.custom_and_image(custom)?;
    let (executable, executable_line) = c.executable(cwd, queue_line, image.is_some())?;
    let transfer_executable = c.transfer_executable()?;
    let (arguments, args_v1) = c.arguments()?;
    let environment = c.environment(env)?;
    let initialdir = c.initialdir(cwd, env)?;
    let input = c.path("input", &initialdir)?;
    let output = c.path("output", &initialdir)?;
    let error = c.path("error", &initialdir)?;
    let log = c.path("log", &initialdir)?;
    let cpus = c.request("request_cpus", None)?;
    let memory = c.request("request_memory", Some(Unit::MiB))?;
    let disk = c.request("request_disk", Some(Unit::KiB))?;
    let limits = c.file_limits()?;
    let priority = c.priority()?;
    let allowed_job_duration = c.allowed_job_duration()?;
    let requirements = c.requirements()?;
    let held = c.held()?;
    let policy = policy::read(|cmd| c.get(cmd))?;
    let transfer = c.transfer(queue_line)?;
    let requests = requests::evaluate(
        [
            ("request_cpus", cpus),
            ("request_memory", memory),
            ("request_disk", disk),
        ],
        opts.cluster_id,
        proc,
        priority,
        &custom_attributes,
    )?;

    // Without an executable the arguments replace the image's Cmd (`docker run IMAGE ARGS`).
    let mut argv: Vec<String> = (!executable.is_empty())
        .then(|| executable.clone())
        .into_iter()
        .collect();
    argv.extend(arguments.iter().cloned());
    Ok(SubmitJob {
        cluster_id: opts.cluster_id,
        proc_id: proc,
        executable,
        executable_line,
        transfer_executable,
        arguments,
        argv,
        args_v1,
        environment,
        initialdir,
        input,
        output,
        error,
        log,
        request_cpus: requests.cpus,
        request_memory: requests.memory,
        request_disk: requests.disk,
        limits,
        priority,
        held,
        image,
        transfer_input_files: transfer.input_files,
        should_transfer_files: transfer.should_transfer_files,
        when_to_transfer_output: transfer.when_to_transfer_output,
        custom_attributes,
        allowed_job_duration,
        policy: policy.attributes,
        job_max_vacate_time: policy.vacate_time,
        requirements,
        input_lines: InputLines {
            input: cmds.get("input").map(|d| d.line),
            transfer_input_files: cmds.get("transfer_input_files").map(|d| d.line),
        },
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn sizes_round_up_like_htcondor() {
        assert_eq!(condor_size("1.2M", Unit::MiB), Ok(2));
        assert_eq!(condor_size("10GB", Unit::KiB), Ok(10485760));
        let e = condor_size("1000 KiB", Unit::KiB).unwrap_err();
        assert!(
            e.contains("'1000 KiB' is not a size") && e.contains("KiB"),
            "{e}"
        );
        let e = condor_size("99999999999999T", Unit::MiB).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn split_items() {
        assert_eq!(split_item("  1, 2 3 4  ", 3), ["1", "2", "3 4"]);
        assert_eq!(split_item("5", 3), ["5", "", ""]);
        assert_eq!(split_item("\t6 7,8 ", 3), ["6", "7", "8"]);
        assert_eq!(split_item("a b", 1), ["a b"]);
    }

    #[test]
    fn custom_values() {
        assert_eq!(
            custom_value("\"a b\""),
            Ok(CustomValue::String("a b".into()))
        );
        assert_eq!(custom_value("3"), Ok(CustomValue::Int(3)));
        assert_eq!(custom_value("2.5"), Ok(CustomValue::Real(2.5)));
        assert_eq!(custom_value("TRUE"), Ok(CustomValue::Bool(true)));
        assert_eq!(
            custom_value("\"q\" + \"r\""),
            Ok(CustomValue::Expr {
                expr: "\"q\" + \"r\"".into()
            })
        );
        assert!(custom_value("1 +").is_err());
        assert!(custom_value("\"abc").is_err());
        assert!(custom_value("(1").is_err());
    }
}
