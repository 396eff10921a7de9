#!/usr/bin/env python3
"""Evaluates ClassAd expressions with HTCondor's own library (the `classad` module of the
`htcondor` wheel), for crates/jobcell-classad/tests/differential.rs.

stdin: one JSON line {"my": ad, "target": ad}, then one JSON line per case:
  {"mode": "plain", "e": expr, "unparse": jobcell's unparse of expr}
      -> {"parse_error": true} or {"value": V, "unparse_same": bool, "text": T}
      (T: str() of the scalar result's Literal, as HTCondor prints it; null for a list or ad)
  {"mode": "match", "e": expr, "probe": expr[, "probe2": expr]}
      -> {"probe": bool[, "probe2": bool]}: each probe evaluated as MY's Requirements, in a
         match of MY against TARGET.
V: {"t": "int"|"real"|"string"|"bool"|"undefined"|"error"|"list"|"ad", "v": ...}; a real's v
is the IEEE bit pattern (or "nan"); a list's v its items' values; an ad's v [name, value] pairs
sorted by lower-cased name.
"""

import json
import math
import struct
import sys

import htcondor  # noqa: F401  (registers stringList*, split and the other HTCondor functions)
import classad

MAX_DEPTH = 4


def no_ws(text):
    return "".join(text.split())


def evaluate(ad, text):
    ad["__x"] = classad.ExprTree(text)
    return ad.eval("__x")


def describe(ad, text, depth=0):
    try:
        v = evaluate(ad, text)
    except Exception as e:  # noqa: BLE001  (a value the module cannot hand to Python)
        # HTCondor aborts the whole evaluation (a reference cycle): no value at all.
        return {"t": "aborted"}
    if v is classad.Value.Undefined:
        return {"t": "undefined"}
    if v is classad.Value.Error:
        return {"t": "error"}
    if isinstance(v, bool):
        return {"t": "bool", "v": v}
    if isinstance(v, int):
        return {"t": "int", "v": v}
    if isinstance(v, float):
        bits = "nan" if math.isnan(v) else struct.unpack("<Q", struct.pack("<d", v))[0]
        return {"t": "real", "v": bits}
    if isinstance(v, str):
        return {"t": "string", "v": v}
    if depth >= MAX_DEPTH:
        return {"t": "list" if isinstance(v, list) else "ad", "v": "deep"}
    if isinstance(v, list):
        return {"t": "list", "v": [describe(ad, f"({text})[{i}]", depth + 1) for i in range(len(v))]}
    if isinstance(v, (dict, classad.ClassAd)):
        names = sorted(v.keys(), key=str.lower)
        return {"t": "ad", "v": [[n.lower(), describe(ad, f"({text}).{n}", depth + 1)] for n in names]}
    return {"t": "unknown", "v": repr(v)}


def literal_text(ad, text):
    """How HTCondor prints a scalar result (str() of its Literal); None for lists and ads."""
    try:
        v = evaluate(ad, text)
    except Exception:  # noqa: BLE001
        return None
    if isinstance(v, (list, dict, classad.ClassAd)):
        return None
    return str(classad.Literal(v))


def main():
    header = json.loads(sys.stdin.readline())
    plain = classad.ClassAd(header["my"])
    my = classad.ClassAd(header["my"])
    target = classad.ClassAd(header["target"])
    out = sys.stdout
    for line in sys.stdin:
        case = json.loads(line)
        try:
            original = classad.ExprTree(case["e"])
        except Exception:
            out.write('{"parse_error": true}\n')
            continue
        if case["mode"] == "plain":
            try:
                unparse_same = no_ws(str(classad.ExprTree(case["unparse"]))) == no_ws(str(original))
            except Exception:
                unparse_same = False
            result = {"value": describe(plain, case["e"]), "unparse_same": unparse_same}
            result["text"] = literal_text(plain, case["e"])
        else:
            result = {}
            for key in ("probe", "probe2"):
                if key in case:
                    my["Requirements"] = classad.ExprTree(case[key])
                    result[key] = bool(target.matches(my))
        out.write(json.dumps(result) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
