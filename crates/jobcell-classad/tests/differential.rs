//! Differential test: jobcell's ClassAd evaluator against HTCondor's own (the `classad` module
//! of the `htcondor` wheel, 23.10.29), over generated expressions.
//!
//! A seeded generator writes expressions over a fixed ad (integers, reals, strings, booleans,
//! lists, nested ads, undefined and cyclic attributes) using every operator and the built-in
//! functions. tests/classad_reference.py evaluates them all in one Python process; both sides
//! must give the same type and value, undefined and error included. Lists and ads are compared
//! item by item (each evaluated in its own scope). Plain cases also check that HTCondor parses
//! jobcell's unparse back to the same expression, and that a scalar value prints as HTCondor
//! prints the literal.
//!
//! HTCondor aborts an evaluation that meets a reference cycle (its Python module then raises);
//! jobcell's answer to the whole expression is then `error`, which counts as agreement.
//!
//! MY./TARGET. cases run in a match: HTCondor's Python module has no way to evaluate an
//! expression against a target, so jobcell's value becomes a probe (`(e) =?= value`, item by
//! item for lists and ads) that HTCondor evaluates as MY's Requirements against TARGET.
//!
//! The generator stays clear of the differences listed under "ClassAd expressions" in
//! docs/submit-files.md (HTCondor's integer pow of a negative base, selecting from a list,
//! which crashes HTCondor, an ad whose attribute selects itself through a nested ad, on which
//! HTCondor never returns, split() with arbitrary delimiter sets).
//!
//! JOBCELL_CLASSAD_CASES (default 10000) and JOBCELL_CLASSAD_SEED (default a fixed seed) set
//! the corpus; JOBCELL_CLASSAD_DUMP=FILE writes the reference's input there (to replay a case:
//! `python tests/classad_reference.py < FILE`). Needs the venv from tests/submit/setup-venv.sh (or $JOBCELL_HTCONDOR_VENV);
//! skips LOUDLY without it, or fails if JOBCELL_REQUIRE_HTCONDOR=1.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobcell_classad::{ClassAd, Expr, Value};
use serde_json::{json, Value as Json};

const FIXED_SEED: u64 = 0x00c1_a55a_d5ee_d001;
const DEFAULT_CASES: usize = 10_000;

const MY_AD: &str = r#"[
    i = 3; j = -7; k = 0; big = 9223372036854775807; r = 2.5; nr = -0.75; z = 0.0;
    s = "Abc"; s2 = "abc"; e = ""; num = "42"; fl = "2.5e1"; csv = "a,b, c"; nums = "1, 2,3";
    t = true; f = false; u = undefined; er = error;
    l = {1, 2.5, "x", true}; li = {3, 1, 2}; ls = {"a", "B", "c"}; le = {}; lu = {undefined, 4};
    lx = {i + 1, s, {1, 2}};
    n = [p = 1; q = "z"; r2 = i + 1; inner = [w = 5; up = p]];
    selfref = selfref + 1; x = i * 2; back = MY.i
]"#;

const TARGET_AD: &str = r#"[
    i = 30; r = 0.25; s = "Tgt"; tl = {7, 8}; tn = [p = 2; q = i]; back = TARGET.i;
    fwd = MY.i; cyc = TARGET.cyc2; cyc2 = 1; own = s; u = undefined
]"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("JOBCELL_HTCONDOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/htcondor-venv"));
    venv.join("bin/python")
}

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const INTS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-7",
    "10",
    "100",
    "42",
    "9223372036854775807",
    "-9223372036854775808",
    "64",
    "-3",
];
const REALS: &[&str] = &[
    "0.0", "1.0", "2.5", "-1.5", "0.1", "1e10", "1.5e300", "-0.0", ".5", "3.0", "1E-3", "-2.75",
];
const STRINGS: &[&str] = &[
    r#""abc""#,
    r#""ABC""#,
    r#""""#,
    r#""a b""#,
    r#""1""#,
    r#""2.5""#,
    r#""true""#,
    r#""FALSE""#,
    r#""a,b, c""#,
    r#""1,2,3""#,
    r#""12abc""#,
    r#""0x1A""#,
    r#""q\"uote""#,
    r#""tab\there""#,
    r#""\101\102""#,
    r#"" 7 ""#,
    r#""1, 2.5""#,
    r#""inf""#,
    r#""b""#,
];
const KEYWORDS: &[&str] = &[
    "true",
    "false",
    "TRUE",
    "undefined",
    "error",
    "Undefined",
    "False",
];
const ATTRS: &[&str] = &[
    "i",
    "j",
    "k",
    "big",
    "r",
    "nr",
    "z",
    "s",
    "s2",
    "e",
    "num",
    "fl",
    "csv",
    "nums",
    "t",
    "f",
    "u",
    "er",
    "l",
    "li",
    "ls",
    "le",
    "lu",
    "lx",
    "n",
    "x",
    "missing",
    "I",
    "R",
    "S",
    "N.P",
    "n.r2",
    "n.inner.w",
    "n.inner.up",
    "n.inner.zz",
    "n[\"q\"]",
    ".i",
    "selfref",
    "'s'",
    "back",
];
const MATCH_ATTRS: &[&str] = &[
    "MY.i",
    "my.s",
    "MY.r",
    "MY.missing",
    "TARGET.i",
    "target.S",
    "TARGET.r",
    "TARGET.tl",
    "TARGET.tn.p",
    "TARGET.tn.q",
    "TARGET.back",
    "TARGET.fwd",
    "TARGET.cyc",
    "TARGET.own",
    "TARGET.missing",
    "TARGET.u",
    "MY.back",
    "back",
    "MY.n.p",
    "TARGET.tl[1]",
];
const BINARY: &[&str] = &[
    "+", "-", "*", "/", "%", "<", "<=", ">", ">=", "==", "!=", "=?=", "=!=", "is", "isnt", "&&",
    "||", "&", "|", "^", "<<", ">>",
];
const REGEXES: &[&str] = &[
    r#""a.c""#,
    r#""^A""#,
    r#""b+""#,
    r#""[0-9]+""#,
    r#""x|y""#,
    r#""^$""#,
    r#""(""#,
    r#""B""#,
    r#""^a.*c$""#,
];
const REGEX_OPTIONS: &[&str] = &[r#""""#, r#""i""#, r#""I""#, r#""m""#, r#""s""#, r#""f""#];
const COMPARE_OPS: &[&str] = &[
    r#""<""#,
    r#""<=""#,
    r#"">""#,
    r#"">=""#,
    r#""==""#,
    r#""!=""#,
    r#""is""#,
    r#""isnt""#,
    r#""LT""#,
    r#""IS""#,
];
const SELECT_BASES: &[&str] = &[
    "n",
    "n.inner",
    "[a = 1; b = i]",
    "missing",
    "u",
    "er",
    "i",
    "s",
    "t",
    "[p = 5]",
];
const SELECT_NAMES: &[&str] = &["p", "q", "r2", "inner", "a", "b", "zz", "P", "w", "up"];
const LIST_BASES: &[&str] = &[
    "l",
    "li",
    "ls",
    "le",
    "lu",
    "lx",
    "{1, 2, 3}",
    r#"split("a b c")"#,
    "{}",
    "{n, [p = 7]}",
];
const STRING_LISTS: &[&str] = &[
    r#""a,b,c""#,
    r#""a, b ,c""#,
    r#""1,2,3""#,
    r#""1, 2.5""#,
    r#""""#,
    r#""a b c""#,
    "csv",
    "nums",
    r#""x;y""#,
    r#""1,x""#,
];

struct Generator {
    rng: Rng,
    with_scopes: bool,
}

impl Generator {
    fn atom(&mut self) -> String {
        let r = &mut self.rng;
        match r.below(if self.with_scopes { 9 } else { 8 }) {
            0 => r.pick(INTS).into(),
            1 => r.pick(REALS).into(),
            2 => r.pick(STRINGS).into(),
            3 => r.pick(KEYWORDS).into(),
            4..=6 => r.pick(ATTRS).into(),
            7 => r
                .pick(&[
                    "(time() > 1700000000)",
                    "isInteger(time())",
                    "(time() - time() <= 1)",
                ])
                .into(),
            _ => r.pick(MATCH_ATTRS).into(),
        }
    }

    fn expr(&mut self, depth: usize) -> String {
        if depth == 0 || self.rng.chance(25) {
            return self.atom();
        }
        let d = depth - 1;
        match self.rng.below(14) {
            0..=3 => {
                let op = self.rng.pick(BINARY);
                format!("{} {op} {}", self.expr(d), self.expr(d))
            }
            4 => {
                let op = self.rng.pick(&[">>>", ">>", "<<"]);
                format!("{} {op} {}", self.expr(d), self.expr(d))
            }
            5 => {
                let op = self.rng.pick(&["-", "+", "!", "~", "!!"]);
                format!("{op}{}", self.expr(d))
            }
            6 => format!("({})", self.expr(d)),
            7 => format!("{} ? {} : {}", self.expr(d), self.expr(d), self.expr(d)),
            8 => {
                let base = self.rng.pick(LIST_BASES);
                let index = match self.rng.below(3) {
                    0 => self.expr(d),
                    _ => self
                        .rng
                        .pick(&["0", "1", "2", "3", "-1", "1.0", "undefined", "k", "\"p\""])
                        .into(),
                };
                format!("{base}[{index}]")
            }
            9 => {
                let base = self.rng.pick(SELECT_BASES);
                format!("{base}.{}", self.rng.pick(SELECT_NAMES))
            }
            10 => match self.rng.below(2) {
                0 => {
                    let n = self.rng.below(4);
                    let items: Vec<String> = (0..n).map(|_| self.expr(d)).collect();
                    format!("{{{}}}", items.join(", "))
                }
                _ => format!("[g = {}; h = {}]", self.expr(d), self.expr(d)),
            },
            _ => self.call(d),
        }
    }

    fn args(&mut self, d: usize, n: usize) -> Vec<String> {
        (0..n).map(|_| self.expr(d)).collect()
    }

    fn call(&mut self, d: usize) -> String {
        let r = self.rng.below(40);
        let (name, mut args): (&str, Vec<String>) = match r {
            0 => ("ifThenElse", self.args(d, 3)),
            1 => ("isUndefined", self.args(d, 1)),
            2 => ("isError", self.args(d, 1)),
            3 => ("isString", self.args(d, 1)),
            4 => ("isInteger", self.args(d, 1)),
            5 => ("isReal", self.args(d, 1)),
            6 => ("isBoolean", self.args(d, 1)),
            7 => ("isList", self.args(d, 1)),
            8 => ("int", self.args(d, 1)),
            9 => ("real", self.args(d, 1)),
            10 => ("string", self.args(d, 1)),
            11 => ("bool", self.args(d, 1)),
            12 => ("floor", self.args(d, 1)),
            13 => ("ceiling", self.args(d, 1)),
            14 => ("round", self.args(d, 1)),
            15 => {
                // HTCondor's integer pow is wrong for negative bases: keep bases non-negative.
                let base = self.rng.pick(&[
                    "2", "3", "0", "2.5", "10", "i", "r", "true", "\"2\"", "u", "0.5",
                ]);
                ("pow", vec![base.into(), self.expr(d)])
            }
            16 => ("min", vec![self.rng.pick(LIST_BASES).into()]),
            17 => ("max", vec![self.list_or_expr(d)]),
            18 => ("strcat", {
                let n = self.rng.below(4);
                self.args(d, n)
            }),
            19 => ("substr", {
                let n = 2 + self.rng.below(2);
                let mut a = vec![self.rng.pick(STRINGS).to_string()];
                a.extend((1..n).map(|_| {
                    self.rng
                        .pick(&["0", "1", "2", "-1", "-2", "10", "-10", "1.5", "u", "\"1\""])
                        .to_string()
                }));
                if self.rng.chance(20) {
                    a[0] = self.expr(d);
                }
                a
            }),
            20 => ("size", vec![self.list_or_expr(d)]),
            21 => ("member", vec![self.expr(d), self.list_or_expr(d)]),
            22 => ("identicalMember", vec![self.expr(d), self.list_or_expr(d)]),
            23 => ("stringListMember", {
                let mut a = vec![
                    self.rng
                        .pick(&["\"a\"", "\"b\"", "\"B\"", "\"2\"", "s", "u", "1"])
                        .into(),
                    self.rng.pick(STRING_LISTS).into(),
                ];
                if self.rng.chance(20) {
                    a.push(self.rng.pick(&["\";\"", "\",\"", "\" \""]).into());
                }
                a
            }),
            24 => ("stringListSize", vec![self.rng.pick(STRING_LISTS).into()]),
            25 => ("stringListSum", vec![self.rng.pick(STRING_LISTS).into()]),
            26 => ("regexp", {
                let mut a = vec![
                    self.rng.pick(REGEXES).into(),
                    self.rng
                        .pick(&["s", "s2", "\"abc\"", "\"xAyc\"", "\"\"", "u", "i"])
                        .into(),
                ];
                if self.rng.chance(40) {
                    a.push(self.rng.pick(REGEX_OPTIONS).into());
                }
                a
            }),
            27 => ("toLower", self.args(d, 1)),
            28 => ("toUpper", self.args(d, 1)),
            29 => (
                "quantize",
                vec![self.expr(d), {
                    let steps = ["4", "2.5", "{2, 5, 8}", "{}", "0", "3", "{1.5, 4}"];
                    self.rng.pick(&steps).to_string()
                }],
            ),
            30 => (
                "join",
                match self.rng.below(3) {
                    0 => vec![
                        self.rng.pick(&["\",\"", "\", \"", "1", "u"]).into(),
                        self.list_or_expr(d),
                    ],
                    1 => vec![self.rng.pick(LIST_BASES).into()],
                    _ => {
                        let n = 1 + self.rng.below(3);
                        self.args(d, n)
                    }
                },
            ),
            31 => ("split", {
                let mut a = vec![self
                    .rng
                    .pick(&[
                        "\"a b  c\"",
                        "\",a,,b,\"",
                        "\"a,b;c\"",
                        "\"\"",
                        "csv",
                        "s",
                        "\" x \"",
                    ])
                    .to_string()];
                if self.rng.chance(40) {
                    a.push(self.rng.pick(&["\",\"", "\";,\"", "\" \""]).into());
                }
                a
            }),
            32 => ("debug", self.args(d, 1)),
            33 => ("sum", vec![self.list_or_expr(d)]),
            34 => ("avg", vec![self.list_or_expr(d)]),
            35 | 36 => (
                if r == 35 { "anyCompare" } else { "allCompare" },
                vec![
                    self.rng.pick(COMPARE_OPS).into(),
                    self.list_or_expr(d),
                    self.expr(d),
                ],
            ),
            37 => ("isClassAd", self.args(d, 1)),
            38 => ("nosuchfunction", self.args(d, 1)),
            _ => (
                self.rng.pick(&["IFTHENELSE", "StrCat", "SIZE"]),
                self.args(d, 2),
            ),
        };
        // Now and then a wrong number of arguments (split and the string-list functions take
        // a delimiter string as an optional last argument, chosen above).
        if self.rng.chance(3) && !name.starts_with("stringList") && name != "split" {
            if args.is_empty() || self.rng.chance(50) {
                args.push(self.atom());
            } else {
                args.pop();
            }
        }
        format!("{name}({})", args.join(", "))
    }

    fn list_or_expr(&mut self, d: usize) -> String {
        if self.rng.chance(70) {
            self.rng.pick(LIST_BASES).into()
        } else {
            self.expr(d)
        }
    }
}

/// A value in the reference script's JSON shape.
fn describe(v: &Value, depth: usize) -> Json {
    match v {
        Value::Undefined => json!({"t": "undefined"}),
        Value::Error => json!({"t": "error"}),
        Value::Bool(b) => json!({"t": "bool", "v": b}),
        Value::Int(i) => json!({"t": "int", "v": i}),
        Value::Real(r) if r.is_nan() => json!({"t": "real", "v": "nan"}),
        Value::Real(r) => json!({"t": "real", "v": r.to_bits()}),
        Value::String(s) => json!({"t": "string", "v": s}),
        Value::List(_) if depth >= 4 => json!({"t": "list", "v": "deep"}),
        Value::Ad(_) if depth >= 4 => json!({"t": "ad", "v": "deep"}),
        Value::List(list) => {
            let items: Vec<Json> = list
                .values()
                .iter()
                .map(|x| describe(x, depth + 1))
                .collect();
            json!({"t": "list", "v": items})
        }
        Value::Ad(ad) => {
            let mut names: Vec<&str> = ad.ad().iter().map(|(n, _)| n).collect();
            names.sort_by_key(|n| n.to_ascii_lowercase());
            let pairs: Vec<Json> = names
                .iter()
                .map(|n| {
                    json!([
                        n.to_ascii_lowercase(),
                        describe(&ad.eval_attr(n), depth + 1)
                    ])
                })
                .collect();
            json!({"t": "ad", "v": pairs})
        }
    }
}

/// An expression true exactly when `e` has value `v` (HTCondor compares scalars with `=?=`).
fn probe(e: &str, v: &Value, depth: usize) -> String {
    match v {
        Value::Real(r) if r.is_nan() => {
            format!("(isReal({e}) && string({e}) == string(real(\"NaN\")))")
        }
        Value::Real(r) => format!("({e} =?= real(\"{r:e}\"))"),
        Value::List(list) if depth < 2 => {
            let mut parts = vec![
                format!("isList({e})"),
                format!("size({e}) == {}", list.len()),
            ];
            for (i, item) in list.values().iter().enumerate() {
                parts.push(probe(&format!("{e}[{i}]"), item, depth + 1));
            }
            format!("({})", parts.join(" && "))
        }
        Value::List(_) => format!("isList({e})"),
        Value::Ad(_) => format!("isClassAd({e})"),
        scalar => format!("({e} =?= {scalar})"),
    }
}

/// HTCondor's aborted evaluation (a reference cycle) is jobcell's `error`.
fn aborted_as_error(v: Json) -> Json {
    match v {
        Json::Object(mut m) => {
            if m.get("t") == Some(&json!("aborted")) {
                return json!({"t": "error"});
            }
            if let Some(inner) = m.remove("v") {
                m.insert("v".into(), aborted_as_error(inner));
            }
            Json::Object(m)
        }
        Json::Array(items) => Json::Array(items.into_iter().map(aborted_as_error).collect()),
        other => other,
    }
}

struct Case {
    text: String,
    /// None: jobcell refuses to parse it.
    ours: Option<(Expr, Value)>,
    with_scopes: bool,
}

#[test]
fn classad_evaluation_matches_htcondor() {
    let python = venv_python();
    if !python.exists() {
        if std::env::var_os("JOBCELL_REQUIRE_HTCONDOR").is_some_and(|v| v == "1") {
            panic!(
                "JOBCELL_REQUIRE_HTCONDOR=1 but {} is missing; run tests/submit/setup-venv.sh",
                python.display()
            );
        }
        eprintln!("SKIPPED: htcondor reference not installed; run tests/submit/setup-venv.sh");
        return;
    }
    let cases_wanted: usize = std::env::var("JOBCELL_CLASSAD_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("JOBCELL_CLASSAD_SEED")
        .ok()
        .and_then(|v| {
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(FIXED_SEED);
    let started = Instant::now();

    let my = ClassAd::parse(MY_AD).expect("the fixed ad parses");
    let target = ClassAd::parse(TARGET_AD).expect("the target ad parses");
    let mut generator = Generator {
        rng: Rng(seed),
        with_scopes: false,
    };
    let mut cases = Vec::with_capacity(cases_wanted);
    for n in 0..cases_wanted {
        generator.with_scopes = n % 5 == 4;
        let depth = 1 + generator.rng.below(4);
        let text = generator.expr(depth);
        let ours = Expr::parse(&text).ok().map(|e| {
            let v = if generator.with_scopes {
                e.eval_in(&my, Some(&target))
            } else {
                my.eval(&e)
            };
            (e, v)
        });
        cases.push(Case {
            text,
            ours,
            with_scopes: generator.with_scopes,
        });
    }

    let mut input = String::new();
    input.push_str(&json!({"my": MY_AD, "target": TARGET_AD}).to_string());
    input.push('\n');
    for case in &cases {
        let line = match (&case.ours, case.with_scopes) {
            (Some((_, value)), true) => {
                let e = format!("({})", case.text);
                let mut line =
                    json!({"mode": "match", "e": case.text, "probe": probe(&e, value, 0)});
                if value.is_error() {
                    // Neither `is error` nor `isnt error`: HTCondor aborted the evaluation.
                    line["probe2"] = json!(format!("{e} =!= error"));
                }
                line
            }
            (Some((expr, _)), false) => {
                json!({"mode": "plain", "e": case.text, "unparse": expr.to_string()})
            }
            (None, _) => json!({"mode": "plain", "e": case.text, "unparse": ""}),
        };
        input.push_str(&line.to_string());
        input.push('\n');
    }

    if let Some(path) = std::env::var_os("JOBCELL_CLASSAD_DUMP") {
        std::fs::write(&path, &input).expect("write the corpus");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/classad_reference.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .env("CONDOR_CONFIG", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the HTCondor reference");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    // HTCondor has inputs it never returns from: kill the reference (only this child) rather
    // than hang, allowing far more than the ~2 ms a case takes.
    let finished = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let finished = finished.clone();
        let pid = child.id();
        let limit = Duration::from_secs(120) + Duration::from_millis(20) * cases.len() as u32;
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if finished.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            true
        })
    };
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .collect::<Result<_, _>>()
        .expect("read the reference's output");
    let status = child.wait().unwrap();
    finished.store(true, Ordering::SeqCst);
    assert!(
        !watchdog.join().unwrap(),
        "the HTCondor reference took too long and was killed (JOBCELL_CLASSAD_DUMP=FILE to replay)"
    );
    writer.join().unwrap().expect("feed the reference");
    let answers: Vec<Json> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("reference JSON"))
        .collect();
    assert!(status.success(), "the HTCondor reference failed: {status}");
    assert_eq!(
        answers.len(),
        cases.len(),
        "the reference answered every case"
    );

    let mut mismatches = Vec::new();
    let mut unparse_mismatches = Vec::new();
    let mut printed_compared = 0;
    for (case, theirs) in cases.iter().zip(&answers) {
        let their_parse_error = theirs.get("parse_error").is_some();
        let agree = match &case.ours {
            None => their_parse_error,
            Some(_) if their_parse_error => false,
            Some((expr, value)) => {
                if case.with_scopes {
                    let aborted =
                        theirs["probe"] == json!(false) && theirs["probe2"] == json!(false);
                    theirs["probe"] == json!(true) || (value.is_error() && aborted)
                } else {
                    if theirs["unparse_same"] != json!(true) {
                        unparse_mismatches.push(format!("{}  =>  {expr}", case.text));
                    }
                    let scalar = !matches!(value, Value::List(_) | Value::Ad(_));
                    if let (true, Some(text)) = (scalar, theirs["text"].as_str()) {
                        printed_compared += 1;
                        if text != value.to_string() {
                            unparse_mismatches
                                .push(format!("{}  prints  {value}, not {text}", case.text));
                        }
                    }
                    let theirs = aborted_as_error(theirs["value"].clone());
                    theirs == describe(value, 0)
                }
            }
        };
        if !agree {
            let ours = match &case.ours {
                None => "parse error".to_string(),
                Some((_, v)) => describe(v, 0).to_string(),
            };
            mismatches.push(format!(
                "{}{}\n    jobcell:  {ours}\n    htcondor: {theirs}",
                if case.with_scopes { "[match] " } else { "" },
                case.text
            ));
        }
    }
    let agreed = cases.len() - mismatches.len();
    eprintln!(
        "classad differential: seed {seed:#x}, {} cases ({} in a match), {agreed} agree ({:.3}%), \
         {} unparse or print differences ({printed_compared} printed values compared), {:.2?}",
        cases.len(),
        cases.iter().filter(|c| c.with_scopes).count(),
        100.0 * agreed as f64 / cases.len() as f64,
        unparse_mismatches.len(),
        started.elapsed()
    );
    for m in mismatches.iter().take(40) {
        eprintln!("MISMATCH {m}");
    }
    for m in unparse_mismatches.iter().take(20) {
        eprintln!("UNPARSE {m}");
    }
    assert!(
        mismatches.is_empty() && unparse_mismatches.is_empty(),
        "{} value and {} unparse disagreements with HTCondor",
        mismatches.len(),
        unparse_mismatches.len()
    );
}
