//! Inputs found by the cargo-fuzz targets in `fuzz/`, kept as regression tests.

use std::io;
use std::path::{Path, PathBuf};

use jobcell_spec::submit::{parse_submit, SubmitEnv, SubmitOptions};

struct NoEnv;

impl SubmitEnv for NoEnv {
    fn read_file(&self, _: &Path) -> io::Result<String> {
        Err(io::Error::from(io::ErrorKind::NotFound))
    }
    fn glob(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn env_vars(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn cwd(&self) -> PathBuf {
        PathBuf::from("/home/u")
    }
    fn is_dir(&self, _: &Path) -> bool {
        true
    }
}

/// fuzz/artifacts/submit/crash-b7f79dcc…: a command name whose third byte falls inside a
/// multi-byte character panicked (`name[..3]` for the `my.` prefix check).
#[test]
fn non_ascii_command_name_is_an_error_not_a_panic() {
    for text in [
        "\x0c\0?\u{c0}=",
        "ab\u{c0} = 1\nqueue\n",
        "m\u{e9}. = 1\nqueue\n",
    ] {
        let r = parse_submit(text, &NoEnv, &SubmitOptions::default());
        let e = r.expect_err("a name with non-ASCII characters is not a valid command");
        assert!(e.to_string().starts_with("line 1:"), "{e}");
    }
}

/// fuzz/artifacts/submit/oom-ec45bc3c…: definitions that use each other several times per
/// level, and self-references (`P = $(P)$(P)`, which copy the previous value at definition
/// time), grow exponentially (over 2 GiB from 4 KiB); now refused past 1 MiB per value.
#[test]
fn exponential_macro_expansion_is_refused() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-submit-oom-ec45bc3c.sub"),
    )
    .unwrap();
    let e = parse_submit(&text, &NoEnv, &SubmitOptions::default()).unwrap_err();
    assert!(e.to_string().contains("MiB"), "{e}");
}

#[test]
fn doubling_macros_are_refused() {
    // A clean, readable form of the same attack: each level doubles, 25 levels (512 MiB).
    let mut text = String::from("a0 = xxxxxxxxxxxxxxxx\n");
    for i in 1..26 {
        text.push_str(&format!("a{i} = $(a{})$(a{})\n", i - 1, i - 1));
    }
    text.push_str("arguments = $(a25)\nexecutable = /bin/true\nqueue\n");
    let e = parse_submit(&text, &NoEnv, &SubmitOptions::default()).unwrap_err();
    assert!(e.to_string().contains("after expanding macros"), "{e}");
}

/// The same doubling chain with an empty leaf: no growth, but 2^30 expansions.
#[test]
fn doubling_macros_that_expand_to_nothing_are_refused() {
    let mut text = String::from("a0 =\n");
    for i in 1..31 {
        text.push_str(&format!("a{i} = $(a{})$(a{})\n", i - 1, i - 1));
    }
    text.push_str("arguments = $(a30)\nexecutable = /bin/true\nqueue\n");
    let t = std::time::Instant::now();
    let e = parse_submit(&text, &NoEnv, &SubmitOptions::default()).unwrap_err();
    assert!(e.to_string().contains("macro expansions"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}
