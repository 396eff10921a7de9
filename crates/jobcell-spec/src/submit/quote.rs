//! HTCondor's argument and environment quoting (condor_utils/condor_arglist.cpp, env.cpp).
//!
//! Two syntaxes exist for both commands. The value is in the new ("V2") syntax when it starts
//! with a double quote: the whole value is one double-quoted string in which `""` is a literal
//! `"`; inside, words are split on whitespace and single quotes group (`''` is a literal `'`).
//! Otherwise the old ("V1") syntax applies: arguments split on whitespace with `\"` for a
//! literal `"` (a bare `"` is an error); environment entries split on `;`.

use std::collections::BTreeMap;

/// The value is in the new syntax (HTCondor's `IsV2QuotedString`).
pub fn is_v2_quoted(s: &str) -> bool {
    s.trim_start().starts_with('"')
}

/// Strip the outer double quotes of a V2 value, turning `""` into `"`.
pub fn v2_quoted_to_raw(s: &str) -> Result<String, String> {
    let s = s.trim_start();
    let mut chars = s.chars().skip(1).peekable();
    let mut raw = String::new();
    let mut closed = false;
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
                raw.push('"');
            } else {
                closed = true;
                break;
            }
        } else {
            raw.push(c);
        }
    }
    if !closed {
        return Err("unterminated double quote".into());
    }
    let rest: String = chars.collect();
    if !rest.trim().is_empty() {
        return Err(format!(
            "unexpected characters after the closing double quote: '{}' (escape a double quote inside by repeating it: \"\")",
            rest.trim()
        ));
    }
    Ok(raw)
}

/// Split V2 raw text into words: whitespace separates, single quotes group, `''` inside quotes
/// is a literal `'`.
pub fn split_v2_raw(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut token = false;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                token = true;
                let mut closed = false;
                while let Some((_, q)) = chars.next() {
                    if q == '\'' {
                        if chars.peek().map(|p| p.1) == Some('\'') {
                            chars.next();
                            buf.push('\'');
                        } else {
                            closed = true;
                            break;
                        }
                    } else {
                        buf.push(q);
                    }
                }
                if !closed {
                    return Err(format!(
                        "unbalanced single quote starting here: {}",
                        &s[i..]
                    ));
                }
            }
            ' ' | '\t' | '\n' | '\r' => {
                if token {
                    out.push(std::mem::take(&mut buf));
                    token = false;
                }
            }
            _ => {
                token = true;
                buf.push(c);
            }
        }
    }
    if token {
        out.push(buf);
    }
    Ok(out)
}

/// Arguments in the old syntax: `\"` is a `"`, a bare `"` is an error, whitespace separates.
pub fn split_v1_args(s: &str) -> Result<Vec<String>, String> {
    let mut raw = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '"' {
            return Err(
                "found an unescaped double quote (the new syntax needs the whole value in double quotes; the old one needs \\\")".into(),
            );
        }
        if c == '\\' && it.peek() == Some(&'"') {
            raw.push(it.next().unwrap());
        } else {
            raw.push(c);
        }
    }
    Ok(raw
        .split([' ', '\t', '\n', '\r'])
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect())
}

/// Parse an `arguments` value. Returns the words and whether the old syntax was used.
pub fn parse_arguments(value: &str) -> Result<(Vec<String>, bool), String> {
    if value.trim().is_empty() {
        // HTCondor writes an empty `Arguments`, not `Args`.
        return Ok((Vec::new(), false));
    }
    if is_v2_quoted(value) {
        let raw = v2_quoted_to_raw(value)?;
        Ok((split_v2_raw(&raw)?, false))
    } else {
        Ok((split_v1_args(value)?, true))
    }
}

fn set_env(map: &mut BTreeMap<String, String>, entry: &str) -> Result<(), String> {
    let Some((name, value)) = entry.split_once('=') else {
        return Err(format!("missing '=' after environment variable '{entry}'"));
    };
    if name.is_empty() {
        return Err(format!("missing variable name in '{entry}'"));
    }
    map.insert(name.to_string(), value.to_string());
    Ok(())
}

/// Parse an `environment` value into `map` (later entries win, as in HTCondor).
pub fn parse_environment(value: &str, map: &mut BTreeMap<String, String>) -> Result<(), String> {
    if is_v2_quoted(value) {
        let raw = v2_quoted_to_raw(value)?;
        for w in split_v2_raw(&raw)? {
            set_env(map, &w)?;
        }
    } else {
        // Leading blanks of a name are dropped; a value keeps its blanks.
        for e in value
            .split(';')
            .map(str::trim_start)
            .filter(|e| !e.is_empty())
        {
            set_env(map, e)?;
        }
    }
    Ok(())
}

/// HTCondor's canonical V2 form of one word (`append_arg` in condor_arglist.cpp), including its
/// quirk of merging adjacent quoted sections.
fn append_v2(word: &str, out: &mut String) {
    if !out.is_empty() {
        out.push(' ');
    }
    if word.is_empty() {
        out.push_str("''");
    }
    for c in word.chars() {
        match c {
            ' ' | '\t' | '\n' | '\r' | '\'' => {
                if out.ends_with('\'') {
                    out.pop();
                } else {
                    out.push('\'');
                }
                if c == '\'' {
                    out.push('\'');
                }
                out.push(c);
                out.push('\'');
            }
            _ => out.push(c),
        }
    }
}

/// The `Arguments` attribute HTCondor writes for these words.
pub fn args_to_v2_raw(words: &[String]) -> String {
    let mut s = String::new();
    for w in words {
        append_v2(w, &mut s);
    }
    s
}

/// V2 raw text as a person writes it: each word that needs quoting in one pair of single
/// quotes (`'a b' 'it''s' ''`), rather than HTCondor's per-character quoting (`a' 'b
/// it''''s`). Both split into the same words; text that does not split is returned as is.
pub fn v2_raw_readable(raw: &str) -> String {
    let Ok(words) = split_v2_raw(raw) else {
        return raw.to_string();
    };
    let mut out = String::with_capacity(raw.len());
    for w in &words {
        if !out.is_empty() {
            out.push(' ');
        }
        if w.is_empty() || w.contains([' ', '\t', '\n', '\r', '\'']) {
            out.push('\'');
            out.push_str(&w.replace('\'', "''"));
            out.push('\'');
        } else {
            out.push_str(w);
        }
    }
    out
}

/// The `Environment` attribute HTCondor writes (entries in name order).
pub fn env_to_v2_raw(env: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    for (k, v) in env {
        append_v2(&format!("{k}={v}"), &mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn v2_arguments() {
        let (a, old) = parse_arguments(r#""a ""b"" 'c d' ''""#).unwrap();
        assert!(!old);
        assert_eq!(a, v(&["a", "\"b\"", "c d", ""]));
        assert_eq!(args_to_v2_raw(&a), r#"a "b" c' 'd ''"#);
        assert_eq!(v2_raw_readable(r#"a "b" c' 'd ''"#), r#"a "b" 'c d' ''"#);
        assert_eq!(v2_raw_readable("it''''s x"), "'it''s' x");
        assert_eq!(
            split_v2_raw(&v2_raw_readable("it''''s a' 'b")).unwrap(),
            v(&["it's", "a b"])
        );
        assert_eq!(parse_arguments(r#""it''s""#).unwrap().0, v(&["its"]));
        assert_eq!(parse_arguments(r#""'it''s'""#).unwrap().0, v(&["it's"]));
    }

    #[test]
    fn v1_arguments() {
        let (a, old) = parse_arguments(r#"a \"b  c"#).unwrap();
        assert!(old);
        assert_eq!(a, v(&["a", "\"b", "c"]));
        assert!(parse_arguments(r#"a "b"#).is_err());
        assert_eq!(parse_arguments("'a b'").unwrap().0, v(&["'a", "b'"]));
    }

    #[test]
    fn quoting_errors() {
        assert!(parse_arguments(r#""a"#)
            .unwrap_err()
            .contains("unterminated"));
        assert!(parse_arguments(r#""a" b"#)
            .unwrap_err()
            .contains("after the closing"));
        assert!(parse_arguments(r#""a 'b""#)
            .unwrap_err()
            .contains("unbalanced"));
    }

    #[test]
    fn environment() {
        let mut m = BTreeMap::new();
        parse_environment("A=1;B=2 3;;C=", &mut m).unwrap();
        assert_eq!(env_to_v2_raw(&m), "A=1 B=2' '3 C=");
        let mut m = BTreeMap::new();
        parse_environment(r#""Z=1 C='it''s' A=1 A=2""#, &mut m).unwrap();
        assert_eq!(env_to_v2_raw(&m), "A=2 C=it''''s Z=1");
        assert!(parse_environment("A", &mut m).is_err());
        assert!(parse_environment(r#""=x""#, &mut m).is_err());
    }
}
