//! Property tests for `clean_abs_path`: whatever the input, an accepted path is
//! absolute, normal (no `.`, `..` or empty components) and names what the input named.

use std::path::{Component, Path};

use jobcell_spec::clean_abs_path;
use proptest::prelude::*;

/// Paths made of the components that matter: `..`, `.`, empty (repeated slashes), names.
fn tricky_path() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::collection::vec(
            prop_oneof![
                Just("..".to_string()),
                Just(".".to_string()),
                Just(String::new()),
                Just("...".to_string()),
                Just("a".to_string()),
                Just("b c".to_string()),
                "[a-z.]{1,4}",
            ],
            0..8,
        ),
        any::<bool>(),
    )
        .prop_map(|(abs, parts, trailing)| {
            let mut s = parts.join("/");
            if abs {
                s.insert(0, '/');
            }
            if trailing {
                s.push('/');
            }
            s
        })
}

fn check(input: &str) {
    let has_dotdot = Path::new(input)
        .components()
        .any(|c| c == Component::ParentDir);
    match clean_abs_path("path", Path::new(input)) {
        Ok(p) => {
            assert!(p.is_absolute(), "{input:?} -> {p:?} is relative");
            assert!(!has_dotdot, "{input:?} has '..' but was accepted as {p:?}");
            let s = p.to_str().unwrap();
            assert!(!s.contains("//"), "{input:?} -> {s:?}");
            assert!(s == "/" || !s.ends_with('/'), "{input:?} -> {s:?}");
            for c in p.components() {
                assert!(
                    matches!(c, Component::RootDir | Component::Normal(_)),
                    "{input:?} -> {p:?} has {c:?}"
                );
            }
            // Same names in the same order as the input's normal components.
            let want: Vec<_> = Path::new(input)
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect();
            let got: Vec<_> = p.components().skip(1).collect();
            assert_eq!(got, want, "{input:?}");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'));
            assert!(
                has_dotdot || !input.starts_with('/') || input.contains('\0'),
                "{input:?} refused for no reason: {msg}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn clean_abs_path_never_yields_dotdot_or_relative(input in tricky_path()) {
        check(&input);
    }

    #[test]
    fn clean_abs_path_on_any_string(input in "\\PC{0,40}") {
        check(&input);
    }
}
