//! The HTCondor submit parser over arbitrary text with a fake environment: never panics, never
//! hangs (libFuzzer's -timeout), errors are one line naming a line number inside the input.
#![no_main]
use std::io;
use std::path::{Path, PathBuf};

use jobcell_spec::submit::{parse_submit, SubmitEnv, SubmitOptions};
use libfuzzer_sys::fuzz_target;

struct FakeEnv;

impl SubmitEnv for FakeEnv {
    fn read_file(&self, path: &Path) -> io::Result<String> {
        if path.ends_with("items.txt") {
            Ok("a 1\nb 2\n# c\n\nd,4\n".into())
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    }
    fn glob(&self, pattern: &str) -> Vec<String> {
        if pattern.contains('*') {
            vec!["in/a.dat".into(), "in/b.dat".into(), "dir/".into()]
        } else {
            Vec::new()
        }
    }
    fn env(&self, name: &str) -> Option<String> {
        (name == "HOME").then(|| "/home/u".to_string())
    }
    fn env_vars(&self) -> Vec<(String, String)> {
        vec![("HOME".into(), "/home/u".into()), ("X".into(), "1 2".into())]
    }
    fn cwd(&self) -> PathBuf {
        PathBuf::from("/home/u/sub")
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.starts_with("/home/u")
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Bound the work one input can ask for (queue 1000000 is legal but slow, not a bug).
    if text.len() > 4096 {
        return;
    }
    match parse_submit(text, &FakeEnv, &SubmitOptions::default()) {
        Ok(_) => {}
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
        }
    }
});
