//! The daemon API's request decoding (`jobcell_node::api::{decode_body, decode_hold,
//! parse_id}`) and the pure checks the core applies to what it decoded (`JobSpec::validate`,
//! `clean_abs_path` of output paths) over arbitrary bytes. The first byte picks the endpoint.
//!
//! Invariants: no panic, no hang; every error is a 400 with a one-line message; whatever
//! decodes re-encodes to JSON that decodes to the same value (so what the core stores in
//! `spec.json` is what the client sent); an accepted hold reason is one line of <= 1024 bytes;
//! an accepted id prints back to a string that parses to it.
#![no_main]
use std::path::Path;

use jobcell_node::api::{decode_body, decode_hold, parse_id};
use jobcell_node::api::ApiErr;
use jobcell_node::types::{ClusterSubmitRequest, SubmitRequest};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn one_line(e: &ApiErr) {
    assert_eq!(e.code, 400, "{e:?}");
    assert!(!e.msg.contains('\n'), "multi-line error: {:?}", e.msg);
}

/// JSON equality where numbers may differ in the last bits of a float (serde_json's float
/// parsing is not exactly round-trip without its `float_roundtrip` feature).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(p), Some(q)) => (p - q).abs() <= 1e-12 * p.abs().max(q.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Decoded -> JSON -> decoded again gives the same JSON.
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) {
    let a = serde_json::to_vec(v).expect("a decoded request encodes");
    let back: T = decode_body(&a).unwrap_or_else(|e| {
        panic!("re-encoded request does not decode: {e:?}: {}", String::from_utf8_lossy(&a))
    });
    let (va, vb) = (
        serde_json::to_value(v).unwrap(),
        serde_json::to_value(&back).unwrap(),
    );
    assert!(same(&va, &vb), "round trip changed the request:\n{va}\n{vb}");
}

fn check_job(spec: &jobcell_spec::JobSpec, stdout: &Option<String>, stderr: &Option<String>) {
    let mut s = spec.clone();
    if let Err(e) = s.validate() {
        let m = e.to_string();
        assert!(!m.contains('\n'), "multi-line spec error: {m:?}");
    }
    for (what, p) in [("stdout", stdout), ("stderr", stderr)] {
        if let Some(p) = p {
            if let Err(e) = jobcell_spec::clean_abs_path(what, Path::new(p)) {
                let m = e.to_string();
                assert!(!m.contains('\n'), "multi-line path error: {m:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    match sel % 4 {
        0 => match decode_body::<SubmitRequest>(body) {
            Ok(r) => {
                round_trip(&r);
                check_job(&r.spec, &r.stdout, &r.stderr);
            }
            Err(e) => one_line(&e),
        },
        1 => match decode_body::<ClusterSubmitRequest>(body) {
            Ok(r) => {
                round_trip(&r);
                for j in r.jobs.iter().take(64) {
                    check_job(&j.spec, &j.stdout, &j.stderr);
                }
            }
            Err(e) => one_line(&e),
        },
        2 => match decode_hold(body) {
            Ok(Some(r)) => assert!(r.len() <= 1024 && !r.contains('\n'), "{r:?}"),
            Ok(None) => {}
            Err(e) => one_line(&e),
        },
        _ => {
            // A path segment: HTTP puts no raw control characters there.
            let Ok(s) = std::str::from_utf8(body) else { return };
            if s.chars().any(|c| c.is_control()) {
                return;
            }
            match parse_id(s) {
                Ok(n) => assert_eq!(parse_id(&n.to_string()).ok(), Some(n)),
                Err(e) => one_line(&e),
            }
        }
    }
});
