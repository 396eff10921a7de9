//! Property test for the mount plan's `under(root, p)`: for every path the spec
//! accepts (`clean_abs_path`), the join stays inside the root, so no step of a plan built on a
//! stage or image root can name a host path outside it.

use std::path::{Component, Path};

use jobcell_sandbox::syscall::under;
use jobcell_spec::clean_abs_path;
use proptest::prelude::*;

fn tricky_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            Just("a".to_string()),
            "[a-z.]{1,4}",
        ],
        0..8,
    )
    .prop_map(|parts| format!("/{}", parts.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn under_never_escapes_the_root(
        root in prop_oneof![Just("/"), Just("/stage"), Just("/var/lib/jobcell/images/x")],
        input in tricky_path(),
    ) {
        let Ok(p) = clean_abs_path("path", Path::new(&input)) else {
            return Ok(());
        };
        let j = under(Path::new(root), &p);
        prop_assert!(j.starts_with(root), "{root} + {input:?} -> {j:?}");
        prop_assert!(
            j.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
            "{root} + {input:?} -> {j:?}"
        );
        // The part below the root is exactly the cleaned path.
        let rel = j.strip_prefix(root).unwrap();
        prop_assert_eq!(Path::new("/").join(rel), p);
    }
}
