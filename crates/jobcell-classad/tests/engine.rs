//! Operators, functions, scopes, parse errors and the depth bounds, one case at a time.
//! (The differential test checks the same ground against HTCondor at scale.)

use jobcell_classad::{AdParseError, ClassAd, EvalBudget, Expr, Value, MAX_DEPTH, MAX_NESTING};

const AD: &str = r#"[
    i = 3; r = 2.5; s = "Abc"; t = true; u = undefined; er = error;
    l = {1, "x", 2.5}; n = [p = 1; q = i + 1; inner = [w = p]];
    selfref = selfref + 1; ping = pong; pong = ping; x = i * 2
]"#;

fn ad() -> ClassAd {
    ClassAd::parse(AD).unwrap()
}

/// `expr` evaluated in the test ad gives `expected` (the value's unparse) of type `ty`.
#[track_caller]
fn check(expr: &str, expected: &str, ty: &str) {
    let parsed = Expr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let value = ad().eval(&parsed);
    assert_eq!(
        (value.to_string().as_str(), value.type_name()),
        (expected, ty),
        "{expr}"
    );
}

#[track_caller]
fn checks(cases: &[(&str, &str, &str)]) {
    for (expr, expected, ty) in cases {
        check(expr, expected, ty);
    }
}

#[test]
fn literals() {
    checks(&[
        ("42", "42", "integer"),
        ("-42", "-42", "integer"),
        ("2.5", "2.500000000000000E+00", "real"),
        (".5", "5.000000000000000E-01", "real"),
        ("1e3", "1.000000000000000E+03", "real"),
        ("0.0", "0.0", "real"),
        ("-0.0", "-0.0", "real"),
        (r#""a\"b\\c\n\101""#, r#""a\"b\\c\nA""#, "string"),
        ("TRUE", "true", "boolean"),
        ("False", "false", "boolean"),
        ("UNDEFINED", "undefined", "undefined"),
        ("Error", "error", "error"),
        ("{1, \"x\", {}}", "{ 1,\"x\",{  } }", "list"),
        ("[a = 1; b = \"x\"]", "[ a = 1; b = \"x\" ]", "classad"),
        ("-9223372036854775808", "-9223372036854775808", "integer"),
    ]);
}

#[test]
fn arithmetic() {
    checks(&[
        ("1 + 2 * 3", "7", "integer"),
        ("(1 + 2) * 3", "9", "integer"),
        ("1 - 2 - 3", "-4", "integer"),
        ("7 / 2", "3", "integer"),
        ("-7 / 2", "-3", "integer"),
        ("-7 % 3", "-1", "integer"),
        ("7.0 / 2", "3.500000000000000E+00", "real"),
        ("i + r", "5.500000000000000E+00", "real"),
        ("true + true", "2", "integer"),
        ("1 / 0", "error", "error"),
        ("1 % 0", "error", "error"),
        ("1.0 / 0", "error", "error"),
        ("-1.0 / 0", "real(\"-INF\")", "real"),
        ("7.5 % 2", "error", "error"),
        ("9223372036854775807 + 1", "-9223372036854775808", "integer"),
        (
            "(-9223372036854775807 - 1) / -1",
            "9223372036854775807",
            "integer",
        ),
        ("\"3\" + 1", "error", "error"),
        ("l + 1", "error", "error"),
        ("u + 1", "undefined", "undefined"),
        ("u + er", "error", "error"),
        ("-true", "error", "error"),
        ("- -1", "1", "integer"),
        ("+2.5", "2.500000000000000E+00", "real"),
        ("6 & 3", "2", "integer"),
        ("6 | 3", "7", "integer"),
        ("6 ^ 3", "5", "integer"),
        ("~6", "-7", "integer"),
        ("1 << 2", "4", "integer"),
        ("-8 >> 1", "-4", "integer"),
        ("-8 >>> 1", "9223372036854775804", "integer"),
        ("true & false", "error", "error"),
        ("3 & 1 == 1", "error", "error"),
        ("1 | 2 ^ 3 & 4", "3", "integer"),
    ]);
}

#[test]
fn comparison_and_identity() {
    checks(&[
        ("1 < 2", "true", "boolean"),
        ("2.5 >= 3", "false", "boolean"),
        ("1 == 1.0", "true", "boolean"),
        ("\"abc\" == \"ABC\"", "true", "boolean"),
        ("\"abc\" < \"ABD\"", "true", "boolean"),
        ("\"a\" != \"A\"", "false", "boolean"),
        ("true == 1", "true", "boolean"),
        ("1 < 2 < 3", "true", "boolean"),
        ("\"a\" == 1", "error", "error"),
        ("u == 1", "undefined", "undefined"),
        ("er == u", "error", "error"),
        ("l == l", "error", "error"),
        ("1 =?= 1.0", "false", "boolean"),
        ("\"a\" is \"A\"", "false", "boolean"),
        ("\"a\" =?= \"a\"", "true", "boolean"),
        ("u =?= undefined", "true", "boolean"),
        ("er is error", "true", "boolean"),
        ("u =!= 1", "true", "boolean"),
        ("true isnt 1", "true", "boolean"),
        ("l is l", "error", "error"),
        ("{1} is 1", "false", "boolean"),
    ]);
}

#[test]
fn three_valued_logic() {
    checks(&[
        ("false && error", "false", "boolean"),
        ("error && false", "error", "error"),
        ("true && error", "error", "error"),
        ("undefined && false", "false", "boolean"),
        ("undefined && true", "undefined", "undefined"),
        ("undefined && error", "error", "error"),
        ("true || undefined", "true", "boolean"),
        ("true || error", "true", "boolean"),
        ("undefined || true", "true", "boolean"),
        ("undefined || false", "undefined", "undefined"),
        ("error || true", "error", "error"),
        ("1 && true", "true", "boolean"),
        ("true && 0.0", "false", "boolean"),
        ("true && \"a\"", "error", "error"),
        ("!undefined", "undefined", "undefined"),
        ("!0", "true", "boolean"),
        ("!\"a\"", "error", "error"),
        ("true ? 1 : error", "1", "integer"),
        ("0.0 ? 1 : 2", "2", "integer"),
        ("u ? 1 : 2", "undefined", "undefined"),
        ("\"a\" ? 1 : 2", "error", "error"),
        ("1 ? 2 : 3 ? 4 : 5", "2", "integer"),
        ("true || false ? 1 : 2", "1", "integer"),
    ]);
}

#[test]
fn scopes_and_selection() {
    checks(&[
        ("I + X", "9", "integer"),
        ("n.p", "1", "integer"),
        ("N.Q", "4", "integer"),
        ("n.inner.w", "1", "integer"),
        ("n.i", "3", "integer"),
        ("n.zz", "undefined", "undefined"),
        ("n[\"q\"]", "4", "integer"),
        ("[a = 1; b = a + 1].b", "2", "integer"),
        ("[a = i].a", "3", "integer"),
        ("missing.a", "undefined", "undefined"),
        ("i.a", "error", "error"),
        ("l.a", "error", "error"),
        ("l[0]", "1", "integer"),
        ("l[2]", "2.500000000000000E+00", "real"),
        ("l[3]", "error", "error"),
        ("l[-1]", "error", "error"),
        ("l[1.0]", "error", "error"),
        ("l[u]", "undefined", "undefined"),
        (".i", "3", "integer"),
        ("'s'", "\"Abc\"", "string"),
        ("MY.i", "3", "integer"),
        ("TARGET.i", "undefined", "undefined"),
    ]);
}

#[test]
fn my_and_target() {
    let job = ClassAd::parse("RequestCpus = 4\nOwner = \"alice\"\nRank = TARGET.Cpus").unwrap();
    let machine =
        ClassAd::parse("[ Cpus = 8; Memory = 2048; Back = TARGET.RequestCpus; Own = Cpus ]")
            .unwrap();
    let eval = |text: &str| {
        Expr::parse(text)
            .unwrap()
            .eval_in(&job, Some(&machine))
            .to_string()
    };
    assert_eq!(
        eval("TARGET.Cpus >= MY.RequestCpus && owner == \"ALICE\""),
        "true"
    );
    assert_eq!(eval("TARGET.Back"), "4", "inside the target, TARGET is us");
    assert_eq!(
        eval("TARGET.Own"),
        "8",
        "unscoped names in the target are its own"
    );
    assert_eq!(
        eval("Cpus"),
        "undefined",
        "unscoped names are not looked up in the target"
    );
    assert_eq!(eval("TARGET.Missing"), "undefined");
    assert_eq!(
        eval(".RequestCpus"),
        "undefined",
        "in a match the outermost scope is empty"
    );
    assert_eq!(job.eval_attr_against("Rank", &machine).to_string(), "8");
    assert_eq!(job.eval_attr("Rank").to_string(), "undefined");
}

#[test]
fn reference_cycles_are_errors() {
    checks(&[
        ("selfref", "error", "error"),
        ("ping", "error", "error"),
        ("isError(selfref)", "error", "error"),
        ("false && selfref", "false", "boolean"),
        ("true ? 1 : selfref", "1", "integer"),
        ("u ? 1 : selfref", "error", "error"),
        ("ifThenElse(u, 1, selfref)", "undefined", "undefined"),
    ]);
    assert_eq!(ad().eval_attr("selfref").to_string(), "error");
    assert_eq!(ad().eval_attr("x").to_string(), "6");
}

#[test]
fn type_functions() {
    checks(&[
        ("isUndefined(missing)", "true", "boolean"),
        ("isError(1/0)", "true", "boolean"),
        ("isString(s)", "true", "boolean"),
        ("isInteger(3.0)", "false", "boolean"),
        ("isReal(3.0)", "true", "boolean"),
        ("isBoolean(1)", "false", "boolean"),
        ("isList(l)", "true", "boolean"),
        ("isClassAd(n)", "true", "boolean"),
        ("isUndefined(1, 2)", "error", "error"),
        ("isError()", "error", "error"),
        ("ifThenElse(1, 2, 3)", "2", "integer"),
        ("ifThenElse(true, 1)", "error", "error"),
        ("IFTHENELSE(false, 1, 2)", "2", "integer"),
        ("debug(l)", "{ 1,\"x\",2.500000000000000E+00 }", "list"),
        ("noSuchFunction(1)", "error", "error"),
    ]);
}

#[test]
fn conversions() {
    checks(&[
        ("int(3.7)", "3", "integer"),
        ("int(-3.7)", "-3", "integer"),
        ("int(\"12abc\")", "12", "integer"),
        ("int(\"1e3\")", "1000", "integer"),
        ("int(\"abc\")", "error", "error"),
        ("int(true)", "1", "integer"),
        ("int(1e30)", "-9223372036854775808", "integer"),
        ("int(u)", "undefined", "undefined"),
        ("real(3)", "3.000000000000000E+00", "real"),
        ("real(\"1.5\")", "1.500000000000000E+00", "real"),
        ("real(\"x\")", "error", "error"),
        ("real(\"NaN\")", "real(\"NaN\")", "real"),
        ("string(3)", "\"3\"", "string"),
        ("string(2.5)", "\"2.500000000000000E+00\"", "string"),
        (
            "string(l)",
            "\"{ 1,\\\"x\\\",2.500000000000000E+00 }\"",
            "string",
        ),
        ("string(u)", "undefined", "undefined"),
        ("bool(\"TRUE\")", "true", "boolean"),
        ("bool(\"yes\")", "undefined", "undefined"),
        ("bool(0.0)", "false", "boolean"),
        ("bool(l)", "error", "error"),
        ("floor(-2.5)", "-3", "integer"),
        ("ceiling(2.1)", "3", "integer"),
        ("round(2.5)", "2", "integer"),
        ("round(3.5)", "4", "integer"),
        ("floor(\"2.5\")", "2", "integer"),
        ("floor(u)", "error", "error"),
        ("toLower(\"AbC\")", "\"abc\"", "string"),
        ("toUpper(true)", "\"TRUE\"", "string"),
        ("toLower(u)", "undefined", "undefined"),
    ]);
}

#[test]
fn numeric_functions() {
    checks(&[
        ("pow(2, 10)", "1024", "integer"),
        ("pow(2, -1)", "5.000000000000000E-01", "real"),
        ("pow(2.0, 2)", "4.000000000000000E+00", "real"),
        ("pow(-2, 3)", "-8", "integer"),
        ("pow(0, -1)", "real(\"INF\")", "real"),
        ("pow(u, 2)", "error", "error"),
        ("quantize(3, 4)", "4", "integer"),
        ("quantize(-7, 3)", "-3", "integer"),
        ("quantize(3.5, 2)", "4.000000000000000E+00", "real"),
        ("quantize(3, {2, 5, 8})", "5", "integer"),
        ("quantize(10, {2, 5, 8})", "16", "integer"),
        ("quantize(2.5, 0)", "2.500000000000000E+00", "real"),
        ("min({3, 1, 2})", "1", "integer"),
        ("min({1, 2.5})", "1.000000000000000E+00", "real"),
        ("max({true, 2})", "2", "integer"),
        ("max({false})", "false", "boolean"),
        ("min({})", "undefined", "undefined"),
        ("min({1, \"a\"})", "error", "error"),
        ("min(1, 2)", "error", "error"),
        ("sum({1, 2, 3})", "6", "integer"),
        ("sum({1, 2.5, undefined})", "3.500000000000000E+00", "real"),
        ("sum({})", "0", "integer"),
        ("sum({\"a\"})", "error", "error"),
        ("avg({1, 2})", "1.500000000000000E+00", "real"),
        ("avg({})", "0", "integer"),
        ("abs(-3)", "error", "error"),
        ("length(\"abc\")", "error", "error"),
    ]);
}

#[test]
fn string_functions() {
    checks(&[
        (
            "strcat(\"a\", 1, 2.5, true)",
            "\"a12.500000000000000E+00true\"",
            "string",
        ),
        ("strcat(\"a\", u, er)", "undefined", "undefined"),
        ("strcat()", "\"\"", "string"),
        ("substr(\"abcdef\", 2)", "\"cdef\"", "string"),
        ("substr(\"abcdef\", 2, 2)", "\"cd\"", "string"),
        ("substr(\"abcdef\", -2)", "\"ef\"", "string"),
        ("substr(\"abcdef\", 2, -1)", "\"cde\"", "string"),
        ("substr(\"abcdef\", -10)", "\"abcdef\"", "string"),
        ("substr(\"abcdef\", 10)", "\"\"", "string"),
        (
            "substr(\"abc\", -10, 9223372036854775807)",
            "\"ab\"",
            "string",
        ),
        ("substr(\"abc\", 1.5)", "error", "error"),
        ("substr(1, u)", "undefined", "undefined"),
        ("size(\"abc\")", "3", "integer"),
        ("size(l)", "3", "integer"),
        ("size(n)", "3", "integer"),
        ("size(3)", "error", "error"),
        ("regexp(\"a.c\", \"abc\")", "true", "boolean"),
        ("regexp(\"A.C\", \"abc\")", "false", "boolean"),
        ("regexp(\"A.C\", \"abc\", \"i\")", "true", "boolean"),
        ("regexp(\"(\", \"abc\")", "error", "error"),
        ("regexp(1, \"abc\")", "error", "error"),
        ("regexp(u, \"abc\")", "undefined", "undefined"),
        ("join(\",\", {\"a\", \"b\"})", "\"a,b\"", "string"),
        ("join(\", \", \"a\", u, 1)", "\"a, 1\"", "string"),
        ("join({\"a\", 1})", "\"a1\"", "string"),
        ("join(u, {})", "undefined", "undefined"),
        ("split(\"a b  c\")", "{ \"a\",\"b\",\"c\" }", "list"),
        ("split(\",a,,b,\")", "{ \"a\",\"\",\"b\" }", "list"),
        ("split(\"a, b\", \",\")", "{ \"a\",\" b\" }", "list"),
        ("split(1)", "error", "error"),
    ]);
}

#[test]
fn list_functions() {
    checks(&[
        ("member(1, {1, 2})", "true", "boolean"),
        ("member(\"X\", {\"x\"})", "true", "boolean"),
        ("member(3, {undefined, 1})", "false", "boolean"),
        ("member(u, {1})", "undefined", "undefined"),
        ("member(1, u)", "undefined", "undefined"),
        ("member(1, 1)", "error", "error"),
        ("identicalMember(1.0, {1})", "false", "boolean"),
        ("identicalMember(\"x\", {\"x\"})", "true", "boolean"),
        ("stringListMember(\"b\", \"a, b ,c\")", "true", "boolean"),
        ("stringListMember(\"B\", \"a,b,c\")", "false", "boolean"),
        ("stringListMember(\"b\", \"a;b\", \";\")", "true", "boolean"),
        ("stringListMember(u, \"a\")", "false", "boolean"),
        ("stringListMember(1, \"1,2\")", "error", "error"),
        ("stringListSize(\"a,b,,c\")", "3", "integer"),
        ("stringListSize(\"\")", "0", "integer"),
        ("stringListSum(\"1,2,3\")", "6", "integer"),
        ("stringListSum(\"1, 2.5\")", "3.500000000000000E+00", "real"),
        ("stringListSum(\"\")", "0.0", "real"),
        ("stringListSum(\"1,x\")", "error", "error"),
        ("anyCompare(\"<\", {1, 2, 3}, 2)", "true", "boolean"),
        ("allCompare(\"<\", {1, 2, 3}, 4)", "true", "boolean"),
        ("anyCompare(\"==\", {\"a\"}, \"A\")", "true", "boolean"),
        ("anyCompare(\"is\", {\"a\"}, \"A\")", "false", "boolean"),
        ("allCompare(\">\", {}, 1)", "true", "boolean"),
        ("anyCompare(\"<\", {undefined, 0}, 1)", "false", "boolean"),
        ("anyCompare(\"LT\", {1}, 2)", "error", "error"),
        ("anyCompare(\"<\", {\"a\"}, 1)", "error", "error"),
    ]);
}

#[test]
fn time_is_now() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let Value::Int(t) = ad().eval(&Expr::parse("time()").unwrap()) else {
        panic!("time() is an integer");
    };
    assert!((t - now).abs() <= 2, "time() {t} vs now {now}");
    check("time(1)", "error", "error");
}

#[test]
fn unparse_reads_back_the_same() {
    for text in [
        "(1 + 2) * -3 - (a.b)[2] + f(1,2) + (x ? y : z)",
        "a is b && c isnt d || !e",
        "- 0 + - 2.5 + - -1 + -x",
        "MY.a + TARGET.b + .c + 'd e'",
        "{ 1,\"x\",{  },[  ],[ a = 1; b = { 2 } ] }",
        "\"tab\\there \\\"quoted\\\" \\\\ \\001 é\"",
        "1 << 2 >> 3 >>> 4 & 5 | 6 ^ ~7",
        "real(\"NaN\") + 1e300 + 0.1 + -0.0",
    ] {
        let expr = Expr::parse(text).unwrap();
        let again = Expr::parse(&expr.to_string())
            .unwrap_or_else(|e| panic!("{text}: unparse {expr} does not parse: {e}"));
        assert_eq!(expr, again, "{text} unparses to {expr}");
    }
    assert_eq!(Expr::parse("a =?= b").unwrap().to_string(), "a is b");
    assert_eq!(Expr::parse("x[1].y").unwrap().to_string(), "x[1].y");
    assert_eq!(Expr::parse("!x").unwrap().to_string(), " !x");
}

#[test]
fn parse_errors_name_the_column() {
    for (text, column, words) in [
        ("1 +", 4, "expected an expression"),
        ("(1 + 2", 7, "expected \")\""),
        ("1 2", 3, "unexpected number 2"),
        ("\"abc", 1, "unterminated"),
        ("5.", 3, "digits after the decimal point"),
        ("1e", 3, "digits in the exponent"),
        ("a @ b", 3, "unexpected character '@'"),
        ("9223372036854775808", 1, "out of range"),
        ("[a = 1; 2]", 9, "expected an attribute name"),
        ("\"a\\0b\"", 3, "NUL"),
        ("f(1,", 5, "expected an expression"),
    ] {
        let err = Expr::parse(text).unwrap_err();
        assert_eq!(err.column, column, "{text}: {err}");
        assert!(err.to_string().contains(words), "{text}: {err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}

#[test]
fn ads_parse_from_both_formats() {
    let lines =
        ClassAd::parse("Cmd = \"/bin/true\"\n\nRequestCpus = 2\nRank = RequestCpus * 2\n").unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines.eval_attr("rank").to_string(), "4");
    assert_eq!(
        lines.to_string(),
        "[ Cmd = \"/bin/true\"; RequestCpus = 2; Rank = RequestCpus * 2 ]"
    );
    let bracketed = ClassAd::parse(&lines.to_string()).unwrap();
    assert_eq!(bracketed, lines);

    let mut ad = ClassAd::new();
    ad.insert("Foo", Expr::int(1));
    ad.insert("FOO", Expr::int(2));
    assert_eq!(ad.len(), 1, "names are case-insensitive");
    assert_eq!(ad.get("foo"), Some(&Expr::int(2)));
    assert_eq!(ad.remove("fOO"), Some(Expr::int(2)));
    assert!(ad.is_empty());

    match ClassAd::parse("A = 1\nB = = 2\n").unwrap_err() {
        AdParseError::Line { line, source } => {
            assert_eq!(line, 2);
            assert_eq!(source.column, 5);
        }
        other => panic!("{other:?}"),
    }
    let err = ClassAd::parse("[ a = 1; b ]").unwrap_err();
    assert!(err.to_string().starts_with("column 12:"), "{err}");
}

#[test]
fn values_of_lists_and_ads() {
    let Value::List(list) = ad().eval(&Expr::parse("{i, i + 1, s}").unwrap()) else {
        panic!("a list");
    };
    assert_eq!(list.to_string_items(), ["3", "4", "\"Abc\""]);
    let Value::Ad(nested) = ad().eval(&Expr::parse("n").unwrap()) else {
        panic!("an ad");
    };
    assert_eq!(
        nested.eval_attr("q").to_string(),
        "4",
        "evaluated in its parent's scope"
    );
    assert_eq!(nested.ad().len(), 3);
}

trait ItemTexts {
    fn to_string_items(&self) -> Vec<String>;
}

impl ItemTexts for jobcell_classad::ListValue {
    fn to_string_items(&self) -> Vec<String> {
        self.values().iter().map(Value::to_string).collect()
    }
}

/// Runs `f` on a thread with a 1 MiB stack: what the bounds must fit into with room to spare.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .expect("no stack overflow")
}

#[test]
fn hostile_nesting_is_refused_not_a_stack_overflow() {
    on_small_stack(|| {
        let n = 100_000;
        for hostile in [
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}1{}", "int(".repeat(n), ")".repeat(n)),
            format!("{}true", "!".repeat(n)),
            format!("{}{}", "{".repeat(n), "}".repeat(n)),
            format!("{}1{}", "[a = ".repeat(n), "]".repeat(n)),
            format!("{}1", "true ? 1 : ".repeat(n)),
            format!("{{1}}{}", "[0]".repeat(n)),
            vec!["1"; n].join(" + "),
        ] {
            let err = Expr::parse(&hostile).unwrap_err();
            assert!(err.to_string().contains("nested"), "{err}");
        }
        // A long chain just inside the limit parses, evaluates and unparses.
        let chain = vec!["1"; MAX_DEPTH].join(" + ");
        let expr = Expr::parse(&chain).unwrap();
        assert_eq!(
            ClassAd::new().eval(&expr).to_string(),
            MAX_DEPTH.to_string()
        );
        assert_eq!(Expr::parse(&expr.to_string()).unwrap(), expr);
    });
    // Ordinary nesting is well inside the bounds.
    let nested = format!("{}1{}", "int(".repeat(40), ")".repeat(40));
    assert_eq!(ad().eval(&Expr::parse(&nested).unwrap()).to_string(), "1");
    let too_deep = format!(
        "{}1{}",
        "(".repeat(MAX_NESTING + 1),
        ")".repeat(MAX_NESTING + 1)
    );
    assert!(Expr::parse(&too_deep).is_err());
}

#[test]
fn long_reference_chains_end_in_error_not_a_stack_overflow() {
    // a0 = a1 + 1, a1 = a2 + 1, ...: deeper than MAX_EVAL_DEPTH allows.
    let mut ad = ClassAd::new();
    for n in 0..5_000 {
        ad.insert(
            format!("a{n}"),
            Expr::parse(&format!("a{} + 1", n + 1)).unwrap(),
        );
    }
    ad.insert("a5000", Expr::int(0));
    assert_eq!(
        on_small_stack(move || ad.eval_attr("a0").to_string()),
        "error"
    );

    // The same through function calls, whose frames are bigger.
    let mut calls = ClassAd::new();
    for n in 0..5_000 {
        let expr = format!(
            "strcat(int(a{}), anyCompare(\"<\", {{a{}}}, 1))",
            n + 1,
            n + 1
        );
        calls.insert(format!("a{n}"), Expr::parse(&expr).unwrap());
    }
    assert_eq!(
        on_small_stack(move || calls.eval_attr("a0").to_string()),
        "error"
    );

    let mut short = ClassAd::new();
    for n in 0..100 {
        short.insert(
            format!("a{n}"),
            Expr::parse(&format!("a{} + 1", n + 1)).unwrap(),
        );
    }
    short.insert("a100", Expr::int(0));
    assert_eq!(short.eval_attr("a0").to_string(), "100");
}

#[test]
fn ads_expressions_and_values_cross_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ClassAd>();
    shareable::<Expr>();
    shareable::<Value>();
    let ad = ad();
    let value = std::thread::spawn(move || ad.eval_attr("x"))
        .join()
        .unwrap();
    assert_eq!(value.as_int(), Some(6));
}

#[test]
fn fan_out_is_stopped_by_the_evaluation_budget() {
    // Each level doubles the work: 2^62 additions without a budget.
    let mut attrs = vec!["a0 = 1".to_string()];
    for i in 1..=62 {
        attrs.push(format!("a{i} = a{0} + a{0}", i - 1));
    }
    let bomb = Expr::parse(&format!("[{}].a62", attrs.join("; "))).unwrap();
    let ad = ClassAd::new();
    let mut budget = EvalBudget {
        steps: 50_000,
        bytes: 1 << 20,
    };
    assert!(matches!(
        bomb.eval_within(&ad, None, &mut budget),
        Value::Error
    ));
    assert!(budget.is_spent());
    // Strings count against the bytes: doubling a string 40 times is stopped.
    let strings = (1..=40)
        .map(|i| format!("s{i} = strcat(s{0}, s{0})", i - 1))
        .collect::<Vec<_>>()
        .join("; ");
    let bomb = Expr::parse(&format!("size([s0 = \"xxxxxxxx\"; {strings}].s40)")).unwrap();
    let mut budget = EvalBudget {
        steps: u64::MAX,
        bytes: 1 << 20,
    };
    assert!(matches!(
        bomb.eval_within(&ad, None, &mut budget),
        Value::Error
    ));
    // A real expression leaves most of a shared budget for the next one.
    let job = ClassAd::parse("RequestCpus = 4\nOwner = \"alice\"").unwrap();
    let real = Expr::parse("RequestCpus > 2 && Owner == \"alice\"").unwrap();
    let mut budget = EvalBudget {
        steps: 100,
        bytes: 100,
    };
    for _ in 0..5 {
        assert!(matches!(
            real.eval_within(&job, None, &mut budget),
            Value::Bool(true)
        ));
    }
    assert!(!budget.is_spent());
}
