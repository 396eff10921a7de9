//! CPU list parsing ("0-1,3") and validation against the parent's effective cpus.

use std::collections::BTreeSet;

pub(crate) use jobcell_spec::parse_cpu_list as parse;

/// Parse what the kernel prints (may be empty = no cpus).
pub(crate) fn parse_kernel(list: &str) -> BTreeSet<u32> {
    if list.trim().is_empty() {
        BTreeSet::new()
    } else {
        parse(list).unwrap_or_default()
    }
}

/// Canonical form for writing ("0-2,5").
pub(crate) fn format(set: &BTreeSet<u32>) -> String {
    let mut out = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// Check `wanted` ⊆ `allowed`; the error names the cpus that are not available.
pub(crate) fn validate(wanted: &str, allowed: &str) -> Result<String, String> {
    let w = parse(wanted)?;
    let a = parse_kernel(allowed);
    let bad: BTreeSet<u32> = w.difference(&a).copied().collect();
    if !bad.is_empty() {
        return Err(format!(
            "cpus {} are not in the parent cgroup's effective cpus {:?}",
            format(&bad),
            allowed.trim()
        ));
    }
    Ok(format(&w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(format(&parse("0-1,3").unwrap()), "0-1,3");
        assert_eq!(format(&parse("3,2,1, 7").unwrap()), "1-3,7");
        assert!(parse("").is_err());
        assert!(parse("a").is_err());
        assert!(parse("3-1").is_err());
        assert!(parse("1-").is_err());
        assert_eq!(validate("0-1", "0-3\n").unwrap(), "0-1");
        let e = validate("0-5", "0-1").unwrap_err();
        assert!(e.contains("cpus 2-5"), "{e}");
    }
}
