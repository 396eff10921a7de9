//! Inputs found by the cargo-fuzz targets in `fuzz/` (issue 8), kept as regression tests.

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
    for text in ["\x0c\0?\u{c0}=", "ab\u{c0} = 1\nqueue\n", "m\u{e9}. = 1\nqueue\n"] {
        let r = parse_submit(text, &NoEnv, &SubmitOptions::default());
        let e = r.expect_err("a name with non-ASCII characters is not a valid command");
        assert!(e.to_string().starts_with("line 1:"), "{e}");
    }
}
