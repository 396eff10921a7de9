//! The built-in functions, with HTCondor's argument rules. Names are case-insensitive; a
//! wrong argument count or an unknown name is `error`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::eval::{binary, identical, Env, Evaluator, Number};
use crate::expr::{BinaryOp, Expr, Literal};
use crate::value::{ListValue, Value};

/// How many arguments each function takes (at least, at most).
fn arity(name: &str) -> Option<(usize, usize)> {
    Some(match name {
        "ifthenelse" | "anycompare" | "allcompare" => (3, 3),
        "isundefined" | "iserror" | "isstring" | "isinteger" | "isreal" | "isboolean"
        | "islist" | "isclassad" | "int" | "real" | "string" | "bool" | "floor" | "ceiling"
        | "round" | "min" | "max" | "sum" | "avg" | "size" | "tolower" | "toupper" | "debug" => {
            (1, 1)
        }
        "pow" | "quantize" | "member" | "identicalmember" => (2, 2),
        "substr" | "stringlistmember" | "regexp" => (2, 3),
        "stringlistsize" | "stringlistsum" | "split" => (1, 2),
        "strcat" | "join" => (0, usize::MAX),
        "time" => (0, 0),
        _ => return None,
    })
}

pub(crate) fn call(ev: &mut Evaluator, name: &str, args: &[Expr], env: &Env) -> Value {
    let name = name.to_ascii_lowercase();
    // An unknown function or a wrong count is an error before any argument is evaluated.
    match arity(&name) {
        Some((min, max)) if (min..=max).contains(&args.len()) => {}
        _ => return Value::Error,
    }
    match (name.as_str(), args) {
        // ifThenElse evaluates only the branch it takes.
        ("ifthenelse", [cond, then, otherwise]) => {
            return ev.choose(cond, then, otherwise, env, false)
        }
        ("strcat", _) => return strcat(ev, env, args),
        // join looks at its items only once the separator is good.
        ("join", [separator, items @ ..]) if !items.is_empty() => {
            let separator = ev.eval(separator, env);
            if separator.is_error() {
                return Value::Error;
            }
            let mut values = vec![separator];
            values.extend(items.iter().map(|item| ev.eval(item, env)));
            return join(ev, &values);
        }
        ("anycompare" | "allcompare", [op, list, x]) => {
            return compare_all(ev, env, [op, list, x], name == "anycompare")
        }
        _ => {}
    }
    let values: Vec<Value> = args.iter().map(|a| ev.eval(a, env)).collect();
    apply(ev, &name, &values)
}

/// strcat stops at the first undefined or error argument.
#[inline(never)]
fn strcat(ev: &mut Evaluator, env: &Env, args: &[Expr]) -> Value {
    let mut out = String::new();
    for arg in args {
        match ev.eval(arg, env) {
            v @ (Value::Undefined | Value::Error) => return v,
            other => out.push_str(&string_form(&other)),
        }
    }
    Value::String(out)
}

/// The strict functions, on evaluated arguments. Kept out of `call` so that the frames of
/// nested calls stay small.
#[inline(never)]
fn apply(ev: &mut Evaluator, name: &str, v: &[Value]) -> Value {
    match name {
        "isundefined" => one(v, |x| Value::Bool(x.is_undefined())),
        "iserror" => one(v, |x| Value::Bool(x.is_error())),
        "isstring" => one(v, |x| Value::Bool(matches!(x, Value::String(_)))),
        "isinteger" => one(v, |x| Value::Bool(matches!(x, Value::Int(_)))),
        "isreal" => one(v, |x| Value::Bool(matches!(x, Value::Real(_)))),
        "isboolean" => one(v, |x| Value::Bool(matches!(x, Value::Bool(_)))),
        "islist" => one(v, |x| Value::Bool(matches!(x, Value::List(_)))),
        "isclassad" => one(v, |x| Value::Bool(matches!(x, Value::Ad(_)))),
        "int" => one(v, to_int),
        "real" => one(v, to_real),
        "string" => one(v, |x| match x {
            Value::Undefined | Value::Error => x.clone(),
            other => Value::String(string_form(other)),
        }),
        "bool" => one(v, to_bool),
        "floor" => one(v, |x| rounded(x, f64::floor)),
        "ceiling" => one(v, |x| rounded(x, f64::ceil)),
        "round" => one(v, |x| rounded(x, f64::round_ties_even)),
        "pow" => two(v, pow),
        "quantize" => two(v, |a, b| quantize(ev, a, b)),
        "min" => one(v, |x| with_list(x, |l| extreme(ev, l, BinaryOp::Lt))),
        "max" => one(v, |x| with_list(x, |l| extreme(ev, l, BinaryOp::Gt))),
        "sum" => one(v, |x| with_list(x, |l| sum(ev, l, false))),
        "avg" => one(v, |x| with_list(x, |l| sum(ev, l, true))),
        "size" => one(v, |x| match x {
            Value::String(s) => Value::Int(s.len() as i64),
            Value::List(l) => Value::Int(l.len() as i64),
            Value::Ad(a) => Value::Int(a.ad().len() as i64),
            Value::Undefined => Value::Undefined,
            _ => Value::Error,
        }),
        "substr" => substr(v),
        "member" => two(v, |x, l| member(ev, x, l, false)),
        "identicalmember" => two(v, |x, l| member(ev, x, l, true)),
        "stringlistmember" => string_list_member(v),
        "stringlistsize" => string_list(v, |items| Value::Int(items.len() as i64)),
        "stringlistsum" => string_list(v, string_list_sum),
        "regexp" => regexp(v),
        "time" if v.is_empty() => Value::Int(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        ),
        "tolower" => one(v, |x| change_case(x, str::to_ascii_lowercase)),
        "toupper" => one(v, |x| change_case(x, str::to_ascii_uppercase)),
        "join" => join(ev, v),
        "split" => split(v),
        "debug" => one(v, Value::clone),
        _ => Value::Error,
    }
}

fn one(v: &[Value], f: impl FnOnce(&Value) -> Value) -> Value {
    match v {
        [x] => f(x),
        _ => Value::Error,
    }
}

fn two(v: &[Value], f: impl FnOnce(&Value, &Value) -> Value) -> Value {
    match v {
        [a, b] => f(a, b),
        _ => Value::Error,
    }
}

fn with_list(x: &Value, f: impl FnOnce(&ListValue) -> Value) -> Value {
    match x {
        Value::List(l) => f(l),
        Value::Undefined => Value::Undefined,
        _ => Value::Error,
    }
}

/// The text a value contributes to strcat/string/join: strings as they are, everything else
/// in its unparse.
pub(crate) fn string_form(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// C's `(long long)` of a double on x86-64: out of range and NaN give the smallest integer.
fn real_to_int(r: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if (-LIMIT..LIMIT).contains(&r) {
        r as i64
    } else {
        i64::MIN
    }
}

/// strtod: the longest prefix (after leading white space) that is a number, if any.
pub(crate) fn parse_leading_real(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let b = t.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let rest = &t[i..];
    let lower = rest.to_ascii_lowercase();
    let sign = if negative { -1.0 } else { 1.0 };
    if lower.starts_with("inf") {
        return Some(sign * f64::INFINITY);
    }
    if lower.starts_with("nan") {
        return Some(f64::NAN);
    }
    if lower.starts_with("0x") {
        let hex: String = rest[2..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        if !hex.is_empty() {
            let value = hex.chars().fold(0.0, |acc, c| {
                acc * 16.0 + c.to_digit(16).unwrap_or(0) as f64
            });
            return Some(sign * value);
        }
    }
    let rb = rest.as_bytes();
    let mut j = 0;
    let digits = |j: &mut usize| {
        let from = *j;
        while rb.get(*j).is_some_and(u8::is_ascii_digit) {
            *j += 1;
        }
        *j - from
    };
    let mut mantissa_digits = digits(&mut j);
    if rb.get(j) == Some(&b'.') {
        let mut k = j + 1;
        let fraction = digits(&mut k);
        if mantissa_digits + fraction > 0 {
            mantissa_digits += fraction;
            j = k;
        }
    }
    if mantissa_digits == 0 {
        return None;
    }
    if matches!(rb.get(j), Some(b'e' | b'E')) {
        let mut k = j + 1;
        if matches!(rb.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        if digits(&mut k) > 0 {
            j = k;
        }
    }
    rest[..j].parse::<f64>().ok().map(|r| sign * r)
}

fn to_int(x: &Value) -> Value {
    match x {
        Value::Int(i) => Value::Int(*i),
        Value::Bool(b) => Value::Int(*b as i64),
        Value::Real(r) => Value::Int(real_to_int(*r)),
        Value::String(s) => {
            parse_leading_real(s).map_or(Value::Error, |r| Value::Int(real_to_int(r)))
        }
        Value::Undefined => Value::Undefined,
        _ => Value::Error,
    }
}

fn to_real(x: &Value) -> Value {
    match x {
        Value::Int(i) => Value::Real(*i as f64),
        Value::Bool(b) => Value::Real(*b as i64 as f64),
        Value::Real(r) => Value::Real(*r),
        Value::String(s) => parse_leading_real(s).map_or(Value::Error, Value::Real),
        Value::Undefined => Value::Undefined,
        _ => Value::Error,
    }
}

fn to_bool(x: &Value) -> Value {
    match x {
        Value::Bool(b) => Value::Bool(*b),
        Value::Int(i) => Value::Bool(*i != 0),
        Value::Real(r) => Value::Bool(*r != 0.0),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        Value::String(_) | Value::Undefined => Value::Undefined,
        _ => Value::Error,
    }
}

/// floor/ceiling/round: an integer result; strings are read as numbers; undefined is an error.
fn rounded(x: &Value, f: fn(f64) -> f64) -> Value {
    match x {
        Value::Int(i) => Value::Int(*i),
        Value::Bool(b) => Value::Int(*b as i64),
        Value::Real(r) => Value::Int(real_to_int(f(*r))),
        Value::String(s) => {
            parse_leading_real(s).map_or(Value::Error, |r| Value::Int(real_to_int(f(r))))
        }
        _ => Value::Error,
    }
}

/// A real for pow/quantize: booleans and numeric strings convert; undefined is an error.
fn real_arg(x: &Value) -> Option<f64> {
    match to_real(x) {
        Value::Real(r) => Some(r),
        _ => None,
    }
}

fn pow(base: &Value, exponent: &Value) -> Value {
    if let (Value::Int(b), Value::Int(e)) = (base, exponent) {
        if *e >= 0 {
            let magnitude = real_to_int((b.unsigned_abs() as f64).powf(*e as f64));
            let negative = *b < 0 && e % 2 == 1;
            return Value::Int(if negative {
                magnitude.wrapping_neg()
            } else {
                magnitude
            });
        }
    }
    match (real_arg(base), real_arg(exponent)) {
        (Some(b), Some(e)) => Value::Real(b.powf(e)),
        _ => Value::Error,
    }
}

/// The smallest multiple of `b` at or above `a`; with a list, the first item at or above `a`
/// (beyond the last item: multiples of the last).
fn quantize(ev: &mut Evaluator, a: &Value, b: &Value) -> Value {
    let a_number = match a {
        Value::Int(i) => Number::Int(*i),
        Value::Real(r) => Number::Real(*r),
        Value::Bool(_) | Value::String(_) => match real_arg(a) {
            Some(r) => Number::Real(r),
            None => return Value::Error,
        },
        _ => return Value::Error,
    };
    let multiple = |step: Number| -> Value {
        match (a_number, step) {
            (_, s) if s.real() == 0.0 => a.clone(),
            // HTCondor's integer rounding, (a + b - 1) / b * b, with C's truncating division.
            (Number::Int(x), Number::Int(s)) => Value::Int(
                x.wrapping_add(s)
                    .wrapping_sub(1)
                    .wrapping_div(s)
                    .wrapping_mul(s),
            ),
            (x, s) => Value::Real((x.real() / s.real()).ceil() * s.real()),
        }
    };
    match b {
        Value::Int(s) => multiple(Number::Int(*s)),
        Value::Real(s) => multiple(Number::Real(*s)),
        Value::List(list) => {
            let mut last = None;
            for index in 0..list.len() {
                let item = ev.list_item(list, index);
                let step = match item {
                    Value::Int(i) => Number::Int(i),
                    Value::Real(r) => Number::Real(r),
                    _ => return Value::Error,
                };
                if step.real() >= a_number.real() {
                    return item;
                }
                last = Some(step);
            }
            match last {
                Some(step) => multiple(step),
                None => a.clone(),
            }
        }
        _ => Value::Error,
    }
}

/// min/max over a list: undefined items are skipped. A lone item comes back as it is;
/// each comparison promotes both sides (booleans to integers, to reals beside a real).
fn extreme(ev: &mut Evaluator, list: &ListValue, better: BinaryOp) -> Value {
    let mut best: Option<Value> = None;
    for index in 0..list.len() {
        let item = ev.list_item(list, index);
        if item.is_undefined() {
            continue;
        }
        let Some(number) = Number::of(&item) else {
            return Value::Error;
        };
        best = Some(match best {
            None => item,
            Some(current) => {
                let current = Number::of(&current).expect("only numbers are kept");
                let (a, b) = match (number, current) {
                    (Number::Int(a), Number::Int(b)) => (Value::Int(a), Value::Int(b)),
                    (a, b) => (Value::Real(a.real()), Value::Real(b.real())),
                };
                match binary(better, &a, &b) {
                    Value::Bool(true) => a,
                    _ => b,
                }
            }
        });
    }
    best.unwrap_or(Value::Undefined)
}

/// sum (and avg): undefined items are skipped; the first item is taken as it is.
fn sum(ev: &mut Evaluator, list: &ListValue, average: bool) -> Value {
    let mut total: Option<Value> = None;
    let mut count = 0;
    for index in 0..list.len() {
        let item = ev.list_item(list, index);
        if item.is_undefined() {
            continue;
        }
        count += 1;
        total = Some(match total {
            None if Number::of(&item).is_some() => item,
            None => return Value::Error,
            Some(t) => match binary(BinaryOp::Add, &t, &item) {
                Value::Error => return Value::Error,
                v => v,
            },
        });
    }
    match total {
        None => Value::Int(0),
        Some(t) if average => Value::Real(Number::of(&t).map_or(0.0, Number::real) / count as f64),
        Some(t) => t,
    }
}

fn substr(v: &[Value]) -> Value {
    let (s, offset, length) = match v {
        [s, o] => (s, o, None),
        [s, o, l] => (s, o, Some(l)),
        _ => return Value::Error,
    };
    if v.iter().any(Value::is_undefined) {
        return Value::Undefined;
    }
    let (Value::String(s), Value::Int(offset)) = (s, offset) else {
        return Value::Error;
    };
    // HTCondor reads offset and length as C ints: the low 32 bits.
    let offset = *offset as i32 as i64;
    let length = match length {
        None => None,
        Some(Value::Int(l)) => Some(*l as i32 as i64),
        Some(_) => return Value::Error,
    };
    let size = s.len() as i64;
    let mut start = if offset < 0 { size + offset } else { offset };
    start = start.clamp(0, size);
    let end = match length {
        None => size,
        Some(l) if l < 0 => size + l,
        Some(l) => start.saturating_add(l),
    }
    .clamp(start, size);
    let bytes = &s.as_bytes()[start as usize..end as usize];
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn member(ev: &mut Evaluator, x: &Value, list: &Value, identical_only: bool) -> Value {
    if list.is_undefined() {
        return Value::Undefined;
    }
    if !identical_only {
        match x {
            Value::Error => return Value::Error,
            Value::Undefined => return Value::Undefined,
            _ => {}
        }
    }
    if matches!(x, Value::List(_) | Value::Ad(_)) {
        return Value::Error;
    }
    let Value::List(list) = list else {
        return Value::Error;
    };
    for index in 0..list.len() {
        let item = ev.list_item(list, index);
        let same = if identical_only {
            identical(x, &item)
        } else {
            binary(BinaryOp::Eq, x, &item)
        };
        if matches!(same, Value::Bool(true)) {
            return Value::Bool(true);
        }
    }
    Value::Bool(false)
}

/// The items of an HTCondor string list: split at any delimiter character, trimmed, empty
/// items dropped.
fn string_list_items<'a>(list: &'a str, delimiters: &str) -> Vec<&'a str> {
    list.split(|c| delimiters.contains(c))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

const STRING_LIST_DELIMITERS: &str = ", ";

fn delimiters(v: Option<&Value>) -> Result<String, Value> {
    match v {
        None => Ok(STRING_LIST_DELIMITERS.into()),
        Some(Value::String(d)) => Ok(d.clone()),
        Some(_) => Err(Value::Error),
    }
}

fn string_list_member(v: &[Value]) -> Value {
    let (x, list, delims) = match v {
        [x, l] => (x, l, None),
        [x, l, d] => (x, l, Some(d)),
        _ => return Value::Error,
    };
    if v.iter().any(Value::is_error) {
        return Value::Error;
    }
    // HTCondor answers false, not undefined, for an undefined item or list; undefined
    // delimiters are the default ones.
    if x.is_undefined() || list.is_undefined() {
        return Value::Bool(false);
    }
    let delims = delims.filter(|d| !d.is_undefined());
    let (Value::String(x), Value::String(list)) = (x, list) else {
        return Value::Error;
    };
    let delims = match delimiters(delims) {
        Ok(d) => d,
        Err(e) => return e,
    };
    Value::Bool(string_list_items(list, &delims).contains(&x.as_str()))
}

fn string_list(v: &[Value], f: impl FnOnce(&[&str]) -> Value) -> Value {
    let (list, delims) = match v {
        [l] => (l, None),
        [l, d] => (l, Some(d)),
        _ => return Value::Error,
    };
    if v.iter().any(Value::is_error) {
        return Value::Error;
    }
    let list = match list {
        Value::String(s) => s,
        Value::Undefined => return Value::Undefined,
        _ => return Value::Error,
    };
    match delimiters(delims) {
        Ok(d) => f(&string_list_items(list, &d)),
        Err(e) => e,
    }
}

/// An integer sum when every item is an integer; otherwise (and for no items) a real.
fn string_list_sum(items: &[&str]) -> Value {
    let mut int_total: i64 = 0;
    let mut real_total = 0.0;
    let mut all_ints = !items.is_empty();
    for item in items {
        if let Ok(i) = item.parse::<i64>() {
            int_total = int_total.wrapping_add(i);
            real_total += i as f64;
            continue;
        }
        match item.parse::<f64>() {
            Ok(r) if item.bytes().any(|b| b.is_ascii_digit()) => {
                all_ints = false;
                real_total += r;
            }
            _ => return Value::Error,
        }
    }
    if all_ints {
        Value::Int(int_total)
    } else {
        Value::Real(real_total)
    }
}

fn regexp(v: &[Value]) -> Value {
    let (pattern, target, options) = match v {
        [p, t] => (p, t, None),
        [p, t, o] => (p, t, Some(o)),
        _ => return Value::Error,
    };
    if v.iter().any(Value::is_error) {
        return Value::Error;
    }
    if v.iter().any(Value::is_undefined) {
        return Value::Undefined;
    }
    let (Value::String(pattern), Value::String(target)) = (pattern, target) else {
        return Value::Error;
    };
    let options = match options {
        None => "",
        Some(Value::String(o)) => o.as_str(),
        Some(Value::Undefined) => return Value::Undefined,
        Some(_) => return Value::Error,
    };
    // Only the lower-case letters count.
    let has = |c: char| options.contains(c);
    match regex_lite::RegexBuilder::new(pattern)
        .case_insensitive(has('i'))
        .multi_line(has('m'))
        .dot_matches_new_line(has('s'))
        .ignore_whitespace(has('x'))
        .build()
    {
        Ok(re) => Value::Bool(re.is_match(target)),
        Err(_) => Value::Error,
    }
}

fn change_case(x: &Value, f: fn(&str) -> String) -> Value {
    match x {
        Value::Undefined | Value::Error => x.clone(),
        other => Value::String(f(&string_form(other))),
    }
}

/// join(sep, list), join(sep, item, item, ...), join(list).
fn join(ev: &mut Evaluator, v: &[Value]) -> Value {
    let mut undefined_seen = v.len() > 1 && v[0].is_undefined();
    let (separator, items): (String, Vec<Value>) = match v {
        [] => return Value::String(String::new()),
        [Value::List(list)] => (String::new(), ev.list_values(list)),
        [single @ (Value::Error | Value::Undefined)] => return single.clone(),
        [_] => return Value::String(String::new()),
        [separator, rest @ ..] => {
            let separator = match separator {
                Value::Undefined => String::new(),
                Value::Error => return Value::Error,
                s => string_form(s),
            };
            match rest {
                [Value::List(list)] => (separator, ev.list_values(list)),
                [Value::Undefined] => return Value::Undefined,
                _ => (separator, rest.to_vec()),
            }
        }
    };
    let mut joined = String::new();
    let mut any_joined = false;
    for item in &items {
        match item {
            Value::Undefined => undefined_seen = true,
            Value::Error => return Value::Error,
            other => {
                // The separator goes only after text: empty items vanish, separator and all.
                if !joined.is_empty() {
                    joined.push_str(&separator);
                }
                joined.push_str(&string_form(other));
                any_joined = true;
            }
        }
    }
    // Nothing joined, and something undefined on the way: undefined, as in HTCondor.
    if !any_joined && undefined_seen {
        return Value::Undefined;
    }
    Value::String(joined)
}

const SPLIT_DELIMITERS: &str = " \t\r\n,";

/// split(s[, delimiters]): a delimiter ends an item; white-space delimiters run together.
fn split(v: &[Value]) -> Value {
    let (s, delims) = match v {
        [Value::String(s)] => (s, SPLIT_DELIMITERS.to_string()),
        [Value::String(s), Value::String(d)] => (s, d.clone()),
        _ => return Value::Error,
    };
    let is_delim = |c: char| delims.contains(c);
    let chars: Vec<char> = s.chars().collect();
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && chars[i].is_whitespace() && is_delim(chars[i]) {
            i += 1;
        }
        if i < chars.len() && is_delim(chars[i]) {
            i += 1;
            while i < chars.len() && chars[i].is_whitespace() && is_delim(chars[i]) {
                i += 1;
            }
        }
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && !is_delim(chars[i]) {
            i += 1;
        }
        items.push(Expr::Literal(Literal::String(
            chars[start..i].iter().collect(),
        )));
    }
    Value::List(ListValue::literal(items))
}

/// anyCompare/allCompare(op, list, value): each argument is evaluated only once the ones
/// before it are found good.
fn compare_all(ev: &mut Evaluator, env: &Env, args: [&Expr; 3], any: bool) -> Value {
    let [op, list, x] = args;
    let Value::String(op) = ev.eval(op, env) else {
        return Value::Error;
    };
    let op = match op.as_str() {
        "<" => BinaryOp::Lt,
        "<=" => BinaryOp::Le,
        ">" => BinaryOp::Gt,
        ">=" => BinaryOp::Ge,
        "==" => BinaryOp::Eq,
        "!=" => BinaryOp::Ne,
        "is" | "=?=" => BinaryOp::Is,
        "isnt" | "=!=" => BinaryOp::Isnt,
        _ => return Value::Error,
    };
    let list = match ev.eval(list, env) {
        Value::List(list) => list,
        Value::Undefined => return Value::Undefined,
        _ => return Value::Error,
    };
    let x = ev.eval(x, env);
    for index in 0..list.len() {
        let item = ev.list_item(&list, index);
        match binary(op, &item, &x) {
            Value::Error => return Value::Error,
            Value::Bool(true) if any => return Value::Bool(true),
            Value::Bool(true) => {}
            Value::Bool(false) if any => {}
            // An undefined comparison ends the search, false, as in HTCondor.
            _ => return Value::Bool(false),
        }
    }
    Value::Bool(!any)
}
