//! Evaluation: scopes (MY, TARGET, nested ads and their parents), three-valued logic, and
//! HTCondor's operator rules.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::ad::ClassAd;
use crate::depth::StackGuard;
use crate::expr::{BinaryOp, Expr, Literal, UnaryOp};
use crate::functions;
use crate::value::{AdValue, ListValue, Value};

/// The deepest nesting of evaluation (expression levels plus attribute references) before the
/// evaluation is aborted as `error` (also when the stack budget runs out first).
pub const MAX_EVAL_DEPTH: usize = 1000;

/// How much work evaluations may do: expression nodes evaluated, and bytes of string values
/// made. Attribute references fan out (`[a1 = a0 + a0; a2 = a1 + a1; ...]` doubles the work at
/// each level), so a short expression could otherwise run for years or fill memory. An
/// evaluation that runs out is aborted as `error`; one budget may be shared by many
/// evaluations ([`Expr::eval_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalBudget {
    pub steps: u64,
    pub bytes: u64,
}

impl EvalBudget {
    /// What one evaluation may use unless given a budget of its own: far beyond any real
    /// expression, and still seconds of work at most.
    pub const DEFAULT: EvalBudget = EvalBudget {
        steps: 10_000_000,
        bytes: 256 << 20,
    };

    /// Whether an evaluation ran out of it (its value was then `error`).
    pub fn is_spent(&self) -> bool {
        self.steps == 0 || self.bytes == 0
    }
}

/// One ad in a scope chain: unscoped names are looked up here, then in `parent`.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) ad: ClassAd,
    pub(crate) parent: Option<Arc<Frame>>,
}

impl Frame {
    fn root(ad: &ClassAd) -> Arc<Frame> {
        Arc::new(Frame {
            ad: ad.clone(),
            parent: None,
        })
    }
}

/// Where an expression is evaluated: its innermost ad, and the MY and TARGET ads.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    scope: Arc<Frame>,
    my: Arc<Frame>,
    target: Option<Arc<Frame>>,
}

impl Env {
    pub(crate) fn empty() -> Env {
        let root = Frame::root(&ClassAd::new());
        Env {
            scope: root.clone(),
            my: root,
            target: None,
        }
    }

    fn within(&self, scope: Arc<Frame>) -> Env {
        Env {
            scope,
            my: self.my.clone(),
            target: self.target.clone(),
        }
    }
}

/// Whether a value counts as true in `&&`, `||`, `!`, `?:` (numbers do: non-zero is true).
enum Truth {
    True,
    False,
    Undefined,
    Error,
}

fn truth(v: &Value) -> Truth {
    match v {
        Value::Bool(true) => Truth::True,
        Value::Bool(false) => Truth::False,
        Value::Int(i) => bool_truth(*i != 0),
        Value::Real(r) => bool_truth(*r != 0.0),
        Value::Undefined => Truth::Undefined,
        _ => Truth::Error,
    }
}

fn bool_truth(b: bool) -> Truth {
    if b {
        Truth::True
    } else {
        Truth::False
    }
}

pub(crate) struct Evaluator {
    depth: usize,
    /// Set on a reference cycle or at MAX_EVAL_DEPTH: like HTCondor, the whole evaluation
    /// then fails, and its result is `error` whatever the operators around would make of it.
    aborted: bool,
    /// Attributes being evaluated, as (ad storage, index): meeting one again is a cycle.
    in_progress: Vec<(usize, usize)>,
    stack: StackGuard,
    /// What is left of the work this evaluation may do.
    budget: EvalBudget,
}

impl Expr {
    /// Evaluates with `my` as MY (and the scope of unscoped names) and `target` as TARGET.
    pub fn eval_in(&self, my: &ClassAd, target: Option<&ClassAd>) -> Value {
        let mut budget = EvalBudget::DEFAULT;
        self.eval_within(my, target, &mut budget)
    }

    /// Like [`Expr::eval_in`], taking its work from `budget` (what is left stays there for
    /// the next evaluation); `error` once the budget is spent.
    pub fn eval_within(
        &self,
        my: &ClassAd,
        target: Option<&ClassAd>,
        budget: &mut EvalBudget,
    ) -> Value {
        let my = Frame::root(my);
        let env = Env {
            scope: my.clone(),
            my,
            target: target.map(Frame::root),
        };
        let mut evaluator = Evaluator::new();
        evaluator.budget = *budget;
        let value = evaluator.eval(self, &env);
        *budget = evaluator.budget;
        evaluator.finish(value)
    }
}

impl Evaluator {
    pub(crate) fn new() -> Evaluator {
        Evaluator {
            depth: 0,
            aborted: false,
            in_progress: Vec::new(),
            stack: StackGuard::new(),
            budget: EvalBudget::DEFAULT,
        }
    }

    pub(crate) fn eval_attr_of(my: &ClassAd, target: Option<&ClassAd>, name: &str) -> Value {
        let my = Frame::root(my);
        let env = Env {
            scope: my.clone(),
            my: my.clone(),
            target: target.map(Frame::root),
        };
        let Some(index) = my.ad.index_of(name) else {
            return Value::Undefined;
        };
        let mut evaluator = Evaluator::new();
        let value = evaluator.attribute(&my, index, &env);
        evaluator.finish(value)
    }

    /// The value of a whole evaluation: `error` if it was aborted anywhere inside.
    pub(crate) fn finish(&self, value: Value) -> Value {
        if self.aborted {
            Value::Error
        } else {
            value
        }
    }

    pub(crate) fn eval(&mut self, expr: &Expr, env: &Env) -> Value {
        if self.aborted {
            return Value::Error;
        }
        if self.depth >= MAX_EVAL_DEPTH || self.stack.exhausted() || self.budget.steps == 0 {
            self.aborted = true;
            return Value::Error;
        }
        self.budget.steps -= 1;
        self.depth += 1;
        let value = self.eval_inner(expr, env);
        self.depth -= 1;
        if let Value::String(text) = &value {
            match self.budget.bytes.checked_sub(text.len() as u64) {
                Some(left) => self.budget.bytes = left,
                None => {
                    self.budget.bytes = 0;
                    self.aborted = true;
                    return Value::Error;
                }
            }
        }
        value
    }

    /// One node. Each arm is a call of its own, so that the frames a deep tree stacks up
    /// stay small.
    fn eval_inner(&mut self, expr: &Expr, env: &Env) -> Value {
        match expr {
            Expr::Literal(literal) => literal_value(literal),
            // In a match the outermost scope is the match itself, which has no attributes.
            Expr::Attr { absolute: true, .. } if env.target.is_some() => Value::Undefined,
            Expr::Attr { name, absolute } => {
                let start = if *absolute { &env.my } else { &env.scope };
                self.lookup(start, name, env)
            }
            Expr::Select(base, name) => self.eval_select(base, name, env),
            Expr::Index(base, index) => self.eval_index(base, index, env),
            Expr::Unary(op, operand) => self.eval_unary(*op, operand, env),
            Expr::Binary(BinaryOp::And, left, right) => self.and(left, right, env),
            Expr::Binary(BinaryOp::Or, left, right) => self.or(left, right, env),
            Expr::Binary(op, left, right) => self.eval_binary(*op, left, right, env),
            Expr::Cond(cond, then, otherwise) => self.choose(cond, then, otherwise, env, true),
            Expr::Paren(inner) => self.eval(inner, env),
            Expr::Call(name, args) => functions::call(self, name, args, env),
            Expr::List(items) => list_value(items, env),
            Expr::Ad(ad) => ad_value(ad, env),
        }
    }

    #[inline(never)]
    fn eval_index(&mut self, base: &Expr, index: &Expr, env: &Env) -> Value {
        let base = self.eval(base, env);
        let index = self.eval(index, env);
        self.subscript(base, index)
    }

    #[inline(never)]
    fn eval_unary(&mut self, op: UnaryOp, operand: &Expr, env: &Env) -> Value {
        let v = self.eval(operand, env);
        unary(op, v)
    }

    #[inline(never)]
    fn eval_binary(&mut self, op: BinaryOp, left: &Expr, right: &Expr, env: &Env) -> Value {
        let l = self.eval(left, env);
        let r = self.eval(right, env);
        binary(op, &l, &r)
    }

    /// An unscoped name: this ad, then the ads around it; undefined when none has it.
    fn lookup(&mut self, start: &Arc<Frame>, name: &str, env: &Env) -> Value {
        let mut frame = Some(start);
        while let Some(f) = frame {
            if let Some(index) = f.ad.index_of(name) {
                return self.attribute(f, index, &env.within(f.clone()));
            }
            frame = f.parent.as_ref();
        }
        Value::Undefined
    }

    fn attribute(&mut self, frame: &Arc<Frame>, index: usize, env: &Env) -> Value {
        let key = (frame.ad.storage_id(), index);
        if self.in_progress.contains(&key) {
            self.aborted = true;
            return Value::Error;
        }
        self.in_progress.push(key);
        let value = self.eval(&frame.ad.entry(index).1, env);
        self.in_progress.pop();
        value
    }

    fn eval_select(&mut self, base: &Expr, name: &str, env: &Env) -> Value {
        if let Expr::Attr {
            name: scope,
            absolute: false,
        } = base
        {
            if scope.eq_ignore_ascii_case("my") {
                let my = env.my.clone();
                return match my.ad.index_of(name) {
                    Some(index) => self.attribute(&my, index, &env.within(my.clone())),
                    None => Value::Undefined,
                };
            }
            if scope.eq_ignore_ascii_case("target") {
                if let Some(target) = &env.target {
                    // Inside the target its own ad is MY, and ours its TARGET.
                    let swapped = Env {
                        scope: target.clone(),
                        my: target.clone(),
                        target: Some(env.my.clone()),
                    };
                    return match target.ad.index_of(name) {
                        Some(index) => self.attribute(target, index, &swapped),
                        None => Value::Undefined,
                    };
                }
            }
        }
        match self.eval(base, env) {
            Value::Ad(ad) => self.select(&ad, name),
            Value::Undefined => Value::Undefined,
            _ => Value::Error,
        }
    }

    pub(crate) fn select(&mut self, ad: &AdValue, name: &str) -> Value {
        self.lookup(&ad.frame, name, &ad.env)
    }

    fn subscript(&mut self, base: Value, index: Value) -> Value {
        match (&base, &index) {
            (Value::Error, _) | (_, Value::Error) => Value::Error,
            (Value::Undefined, _) | (_, Value::Undefined) => Value::Undefined,
            // HTCondor reads the index as a C int: the low 32 bits.
            (Value::List(list), Value::Int(i)) => match usize::try_from(*i as i32) {
                Ok(i) if i < list.len() => self.list_item(list, i),
                _ => Value::Error,
            },
            (Value::Ad(ad), Value::String(name)) => self.select(ad, name),
            _ => Value::Error,
        }
    }

    pub(crate) fn list_item(&mut self, list: &ListValue, index: usize) -> Value {
        self.eval(&list.items[index], &list.env)
    }

    /// Every item of a list, evaluated.
    pub(crate) fn list_values(&mut self, list: &ListValue) -> Vec<Value> {
        (0..list.len()).map(|i| self.list_item(list, i)).collect()
    }

    /// `false && x` is false without looking at x; `undefined && false` is false.
    fn and(&mut self, left: &Expr, right: &Expr, env: &Env) -> Value {
        let left = truth(&self.eval(left, env));
        if let Truth::False = left {
            return Value::Bool(false);
        }
        // An erroneous left side still has HTCondor evaluate the right (a cycle there aborts).
        let right = truth(&self.eval(right, env));
        if let Truth::Error = left {
            return Value::Error;
        }
        match right {
            Truth::Error => Value::Error,
            Truth::False => Value::Bool(false),
            Truth::Undefined => Value::Undefined,
            Truth::True => match left {
                Truth::Undefined => Value::Undefined,
                _ => Value::Bool(true),
            },
        }
    }

    /// `true || x` is true without looking at x; `undefined || true` is true.
    fn or(&mut self, left: &Expr, right: &Expr, env: &Env) -> Value {
        let left = truth(&self.eval(left, env));
        if let Truth::True = left {
            return Value::Bool(true);
        }
        let right = truth(&self.eval(right, env));
        if let Truth::Error = left {
            return Value::Error;
        }
        match right {
            Truth::Error => Value::Error,
            Truth::True => Value::Bool(true),
            Truth::Undefined => Value::Undefined,
            Truth::False => match left {
                Truth::Undefined => Value::Undefined,
                _ => Value::Bool(false),
            },
        }
    }

    /// `?:` and ifThenElse: numbers count as booleans; anything else is an error. When the
    /// condition is neither true nor false, HTCondor's `?:` (not ifThenElse) still evaluates
    /// both branches, so a reference cycle in either aborts the evaluation.
    pub(crate) fn choose(
        &mut self,
        cond: &Expr,
        then: &Expr,
        otherwise: &Expr,
        env: &Env,
        evaluate_both: bool,
    ) -> Value {
        let result = match truth(&self.eval(cond, env)) {
            Truth::True => return self.eval(then, env),
            Truth::False => return self.eval(otherwise, env),
            Truth::Undefined => Value::Undefined,
            Truth::Error => Value::Error,
        };
        if evaluate_both {
            self.eval(then, env);
            self.eval(otherwise, env);
        }
        result
    }
}

fn literal_value(literal: &Literal) -> Value {
    match literal {
        Literal::Undefined => Value::Undefined,
        Literal::Error => Value::Error,
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Int(i) => Value::Int(*i),
        Literal::Real(r) => Value::Real(*r),
        Literal::String(s) => Value::String(s.clone()),
    }
}

fn list_value(items: &[Expr], env: &Env) -> Value {
    Value::List(ListValue {
        items: Arc::new(items.to_vec()),
        env: env.clone(),
        computed: false,
    })
}

fn ad_value(ad: &ClassAd, env: &Env) -> Value {
    Value::Ad(AdValue {
        frame: Arc::new(Frame {
            ad: ad.clone(),
            parent: Some(env.scope.clone()),
        }),
        env: env.clone(),
    })
}

fn unary(op: UnaryOp, v: Value) -> Value {
    match (op, v) {
        (_, Value::Error) => Value::Error,
        (_, Value::Undefined) => Value::Undefined,
        (UnaryOp::Neg, Value::Int(i)) => Value::Int(i.wrapping_neg()),
        (UnaryOp::Neg, Value::Real(r)) => Value::Real(-r),
        (UnaryOp::Plus, v @ (Value::Int(_) | Value::Real(_))) => v,
        (UnaryOp::BitNot, Value::Int(i)) => Value::Int(!i),
        (UnaryOp::Not, v) => match truth(&v) {
            Truth::True => Value::Bool(false),
            Truth::False => Value::Bool(true),
            _ => Value::Error,
        },
        _ => Value::Error,
    }
}

/// A number for arithmetic and comparison; booleans count as 0 and 1.
#[derive(Clone, Copy)]
pub(crate) enum Number {
    Int(i64),
    Real(f64),
}

impl Number {
    pub(crate) fn of(v: &Value) -> Option<Number> {
        match v {
            Value::Bool(b) => Some(Number::Int(*b as i64)),
            Value::Int(i) => Some(Number::Int(*i)),
            Value::Real(r) => Some(Number::Real(*r)),
            _ => None,
        }
    }

    pub(crate) fn real(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Real(r) => r,
        }
    }
}

pub(crate) fn binary(op: BinaryOp, l: &Value, r: &Value) -> Value {
    use BinaryOp::*;
    match op {
        Is | Isnt => match identical(l, r) {
            Value::Bool(same) => Value::Bool(same == (op == Is)),
            other => other,
        },
        _ if l.is_error() || r.is_error() => Value::Error,
        _ if l.is_undefined() || r.is_undefined() => Value::Undefined,
        Add | Sub | Mul | Div | Mod => arithmetic(op, l, r),
        Eq | Ne | Lt | Le | Gt | Ge => compare(op, l, r),
        BitAnd | BitOr | BitXor | Shl | Shr | UShr => match (l, r) {
            (Value::Int(a), Value::Int(b)) => Value::Int(match op {
                BitAnd => a & b,
                BitOr => a | b,
                BitXor => a ^ b,
                Shl => a.wrapping_shl(*b as u32),
                Shr => shift_right(*a, *b),
                _ => unsigned_shift_right(*a, *b),
            }),
            _ => Value::Error,
        },
        And | Or => unreachable!("&& and || short-circuit in Evaluator"),
    }
}

/// HTCondor's `>>`: a negative value shifts in ones and saturates at -1 from 63 on, and is
/// left alone by a negative count; a non-negative value shifts as the CPU does (count mod 64).
fn shift_right(a: i64, b: i64) -> i64 {
    match (a < 0, b) {
        (true, b) if b < 0 => a,
        (true, b) if b >= 63 => -1,
        _ => a.wrapping_shr(b as u32),
    }
}

/// HTCondor's `>>>`: a negative value is shifted and then masked, with a mask that is 0 for
/// a count of 0 (mod 64).
fn unsigned_shift_right(a: i64, b: i64) -> i64 {
    if a >= 0 {
        return a.wrapping_shr(b as u32);
    }
    a.wrapping_shr(b as u32) & !(-1i64).wrapping_shl(64u32.wrapping_sub(b as u32))
}

fn arithmetic(op: BinaryOp, l: &Value, r: &Value) -> Value {
    use BinaryOp::*;
    let (Some(a), Some(b)) = (Number::of(l), Number::of(r)) else {
        return Value::Error;
    };
    if let (Number::Int(a), Number::Int(b)) = (a, b) {
        return match op {
            Add => Value::Int(a.wrapping_add(b)),
            Sub => Value::Int(a.wrapping_sub(b)),
            Mul => Value::Int(a.wrapping_mul(b)),
            Div if b == 0 => Value::Error,
            // HTCondor answers the one overflowing quotient with the largest integer.
            Div if a == i64::MIN && b == -1 => Value::Int(i64::MAX),
            Div => Value::Int(a / b),
            Mod if b == 0 => Value::Error,
            Mod => Value::Int(a.wrapping_rem(b)),
            _ => unreachable!("not arithmetic"),
        };
    }
    let (a, b) = (a.real(), b.real());
    let result = match op {
        Add => a + b,
        Sub => a - b,
        Mul => a * b,
        Div => a / b,
        // HTCondor has no real remainder.
        _ => return Value::Error,
    };
    // Positive overflow (and x/0 for positive x) is an error in HTCondor; -inf and NaN are not.
    if result == f64::INFINITY {
        Value::Error
    } else {
        Value::Real(result)
    }
}

/// Byte order of the ASCII-lowercased strings, as strcasecmp.
fn compare_ignore_case(a: &str, b: &str) -> Ordering {
    let a = a.bytes().map(|c| c.to_ascii_lowercase());
    let b = b.bytes().map(|c| c.to_ascii_lowercase());
    a.cmp(b)
}

fn compare(op: BinaryOp, l: &Value, r: &Value) -> Value {
    use BinaryOp::*;
    let ordering = match (l, r) {
        (Value::String(a), Value::String(b)) => Some(compare_ignore_case(a, b)),
        _ => match (Number::of(l), Number::of(r)) {
            (Some(Number::Int(a)), Some(Number::Int(b))) => Some(a.cmp(&b)),
            (Some(a), Some(b)) => a.real().partial_cmp(&b.real()),
            _ => return Value::Error,
        },
    };
    // An unordered pair (NaN) compares false, but unequal.
    Value::Bool(match ordering {
        None => op == Ne,
        Some(o) => match op {
            Eq => o == Ordering::Equal,
            Ne => o != Ordering::Equal,
            Lt => o == Ordering::Less,
            Le => o != Ordering::Greater,
            Gt => o == Ordering::Greater,
            Ge => o != Ordering::Less,
            _ => unreachable!("not a comparison"),
        },
    })
}

/// `is`: same type and same value (strings case-sensitive); never undefined. Lists and ads
/// cannot be compared this way in HTCondor: error.
pub(crate) fn identical(l: &Value, r: &Value) -> Value {
    Value::Bool(match (l, r) {
        (Value::List(a), Value::List(b)) if a.computed != b.computed => false,
        (Value::List(_), Value::List(_)) | (Value::Ad(_), Value::Ad(_)) => return Value::Error,
        (Value::Undefined, Value::Undefined) | (Value::Error, Value::Error) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Real(a), Value::Real(b)) => a == b,
        (Value::String(a), Value::String(b)) => a == b,
        _ => false,
    })
}
