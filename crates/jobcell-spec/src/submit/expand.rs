//! Macros: `$(NAME)`, `$(NAME:default)`, `$ENV(NAME[:default])`, `$RANDOM_INTEGER(lo,hi[,step])`,
//! `$RANDOM_CHOICE(a,b,...)`, `$F[pnxq](NAME)`, `$(DOLLAR)`; `$$(...)` is left alone (HTCondor
//! substitutes it at match time). Names are case-insensitive. Values are expanded when a job is
//! made, so a macro may refer to one defined later, as in HTCondor.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use super::{SubmitEnv, SubmitError, Warning};

/// One definition: its raw value and the line it came from.
#[derive(Debug, Clone)]
pub struct Def {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// The definitions in effect at a point of the file (keys lowercase).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub defs: HashMap<String, Def>,
}

impl Table {
    pub fn get(&self, name: &str) -> Option<&Def> {
        self.defs.get(&name.to_ascii_lowercase())
    }

    /// Define `name`; a reference to `name` itself in the value means the previous value
    /// (HTCondor expands self-references at definition time: `A = $(A) more`).
    /// Refused past `MAX_EXPANDED`: each self-reference copies the previous value, so a few
    /// lines of `A = $(A)$(A)` grow exponentially (found by fuzzing).
    pub fn define(&mut self, name: &str, value: &str, line: usize) -> Result<(), SubmitError> {
        let key = name.to_ascii_lowercase();
        let prev = self
            .defs
            .get(&key)
            .map(|d| d.value.clone())
            .unwrap_or_default();
        let value = replace_self_ref(value, name, &prev);
        if value.len() > MAX_EXPANDED {
            return Err(SubmitError::Syntax {
                line,
                msg: format!(
                    "{name} is longer than {} MiB after replacing $({name}) with its previous value",
                    MAX_EXPANDED >> 20
                ),
            });
        }
        self.defs.insert(
            key,
            Def {
                name: name.to_string(),
                value,
                line,
            },
        );
        Ok(())
    }
}

fn replace_self_ref(value: &str, name: &str, prev: &str) -> String {
    let pat = format!("$({})", name.to_ascii_lowercase());
    let lower = value.to_ascii_lowercase();
    if !lower.contains(&pat) {
        return value.to_string();
    }
    let mut out = String::new();
    let mut i = 0;
    while let Some(p) = lower[i..].find(&pat) {
        out.push_str(&value[i..i + p]);
        out.push_str(prev);
        i += p + pat.len();
    }
    out.push_str(&value[i..]);
    out
}

/// Expansion for one job: the table, the job's own variables, the environment.
pub struct Expander<'a> {
    pub table: &'a Table,
    /// The queue statement's variables (Item, loop variables), keys lowercase: they win over
    /// the file's definitions.
    pub live: HashMap<String, String>,
    /// Built-in per-job macros (Cluster, Process, Step, Row...), keys lowercase: a definition
    /// of the same name in the file wins over them, as in `condor_submit`.
    pub builtins: HashMap<String, String>,
    pub env: &'a dyn SubmitEnv,
    /// Lowercase names some expansion looked up.
    pub used: &'a RefCell<HashSet<String>>,
    pub warnings: &'a RefCell<Vec<Warning>>,
    pub warned_undefined: &'a RefCell<HashSet<String>>,
    pub rng: &'a Cell<u64>,
}

const MAX_DEPTH: usize = 32;
/// Longest value after expansion: nested definitions that each use the next several times
/// grow exponentially with depth (found by fuzzing: a 4 KiB file took over 2 GiB).
const MAX_EXPANDED: usize = 1 << 20;
/// Most nested expansions for one top-level value (real files use a handful).
const MAX_EXPANSIONS: u64 = 1_000_000;

thread_local! {
    static EXPANSIONS: Cell<u64> = const { Cell::new(0) };
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

impl Expander<'_> {
    /// Expand every macro in `value` (taken from line `line`).
    pub fn expand(&self, value: &str, line: usize) -> Result<String, SubmitError> {
        EXPANSIONS.with(|n| n.set(0));
        self.expand_depth(value, line, 0)
    }

    fn lookup(&self, name: &str, line: usize, depth: usize) -> Result<Option<String>, SubmitError> {
        let key = name.to_ascii_lowercase();
        self.used.borrow_mut().insert(key.clone());
        if let Some(v) = self.live.get(&key) {
            return Ok(Some(v.clone()));
        }
        match self.table.defs.get(&key) {
            None => Ok(self.builtins.get(&key).cloned()),
            Some(d) => {
                if depth >= MAX_DEPTH {
                    return Err(SubmitError::Recursion {
                        line,
                        name: format!("$({name})"),
                    });
                }
                Ok(Some(self.expand_depth(&d.value, d.line, depth + 1)?))
            }
        }
    }

    fn next_random(&self) -> u64 {
        // xorshift64*: enough for spreading jobs, not for secrets.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn expand_depth(&self, value: &str, line: usize, depth: usize) -> Result<String, SubmitError> {
        // A doubling chain of definitions that expand to nothing costs 2^depth calls without
        // growing the value: bound the work per top-level value too.
        let n = EXPANSIONS.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        if n > MAX_EXPANSIONS {
            return Err(SubmitError::Syntax {
                line,
                msg: format!("more than {MAX_EXPANSIONS} macro expansions for one value"),
            });
        }
        let mut out = String::with_capacity(value.len());
        let mut i = 0;
        while let Some(off) = value[i..].find('$') {
            if out.len() > MAX_EXPANDED {
                return Err(SubmitError::Syntax {
                    line,
                    msg: format!(
                        "the value is longer than {} MiB after expanding macros",
                        MAX_EXPANDED >> 20
                    ),
                });
            }
            let pos = i + off;
            out.push_str(&value[i..pos]);
            let rest = &value[pos..];
            if rest.starts_with("$$") {
                out.push_str("$$");
                i = pos + 2;
                continue;
            }
            let word_len = rest[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - 1);
            let word = &rest[1..1 + word_len];
            let after = &rest[1 + word_len..];
            let close = after.starts_with('(').then(|| after.find(')')).flatten();
            let Some(close) = close else {
                // Not a macro reference (HTCondor leaves `$(foo` and a lone `$` as they are).
                out.push('$');
                i = pos + 1;
                continue;
            };
            let inner = &after[1..close];
            let end = pos + 1 + word_len + close + 1;
            if word.is_empty() {
                let (name, default) = match inner.split_once(':') {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                if !is_name(name) {
                    out.push('$');
                    i = pos + 1;
                    continue;
                }
                if name.eq_ignore_ascii_case("DOLLAR") {
                    out.push('$');
                } else if let Some(v) = self.lookup(name, line, depth)? {
                    out.push_str(&v);
                } else if let Some(d) = default {
                    out.push_str(&self.expand_depth(d, line, depth + 1)?);
                } else {
                    if self
                        .warned_undefined
                        .borrow_mut()
                        .insert(format!("{line}:{}", name.to_ascii_lowercase()))
                    {
                        self.warnings.borrow_mut().push(Warning {
                            line,
                            msg: format!(
                                "$({name}) is not defined; it expands to nothing (as in HTCondor)"
                            ),
                        });
                    }
                }
            } else {
                out.push_str(&self.function(word, inner, line, depth)?);
            }
            i = end;
        }
        out.push_str(&value[i..]);
        Ok(out)
    }

    fn function(
        &self,
        word: &str,
        inner: &str,
        line: usize,
        depth: usize,
    ) -> Result<String, SubmitError> {
        let upper = word.to_ascii_uppercase();
        let args = self.expand_depth(inner, line, depth + 1)?;
        let bad = |msg: String| SubmitError::Syntax { line, msg };
        match upper.as_str() {
            "ENV" => {
                let (name, default) = match args.split_once(':') {
                    Some((n, d)) => (n.trim(), Some(d)),
                    None => (args.trim(), None),
                };
                Ok(match (self.env.env(name), default) {
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_string(),
                    (None, None) => "UNDEFINED".into(),
                })
            }
            "RANDOM_INTEGER" => {
                let nums: Vec<i64> = args
                    .split(',')
                    .map(|a| a.trim().parse::<i64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad(format!("$RANDOM_INTEGER({args}): expected min,max[,step] integers")))?;
                let (lo, hi, step) = match nums[..] {
                    [lo, hi] => (lo, hi, 1),
                    [lo, hi, step] if step > 0 => (lo, hi, step),
                    _ => return Err(bad(format!("$RANDOM_INTEGER({args}): expected min,max[,step]"))),
                };
                if hi < lo {
                    return Err(bad(format!("$RANDOM_INTEGER({args}): max is below min")));
                }
                let n = ((hi - lo) / step + 1) as u64;
                Ok((lo + (self.next_random() % n) as i64 * step).to_string())
            }
            "RANDOM_CHOICE" => {
                let choices: Vec<&str> = args.split(',').map(str::trim).collect();
                Ok(choices[(self.next_random() % choices.len() as u64) as usize].to_string())
            }
            f if f.starts_with('F') && f.len() > 1 && f[1..].chars().all(|c| "PNXQ".contains(c)) => {
                let name = inner.trim();
                let v = if is_name(name) {
                    self.lookup(name, line, depth)?.unwrap_or_default()
                } else {
                    args.clone()
                };
                Ok(file_parts(&v, &word[1..]))
            }
            _ => Err(SubmitError::Unsupported {
                line,
                what: format!("${word}()"),
                why: "jobcell knows $(NAME), $ENV(), $RANDOM_INTEGER(), $RANDOM_CHOICE() and $F[pnxq]()".into(),
            }),
        }
    }
}

/// HTCondor's `$F` flags: p = directory (with its slash), n = name without extension,
/// x = extension (with its dot), q = wrap in double quotes.
fn file_parts(path: &str, flags: &str) -> String {
    let flags = flags.to_ascii_lowercase();
    let (dir, file) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => (&file[..i], &file[i..]),
        _ => (file, ""),
    };
    let mut s = String::new();
    let parts = flags.contains('p') || flags.contains('n') || flags.contains('x');
    if !parts {
        s.push_str(path);
    }
    if flags.contains('p') {
        s.push_str(dir);
    }
    if flags.contains('n') {
        s.push_str(stem);
    }
    if flags.contains('x') {
        s.push_str(ext);
    }
    if flags.contains('q') {
        s = format!("\"{s}\"");
    }
    s
}
