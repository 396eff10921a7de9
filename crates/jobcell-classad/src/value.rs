//! The result of evaluating an expression.

use std::fmt;
use std::sync::Arc;

use crate::ad::ClassAd;
use crate::eval::{Env, Evaluator, Frame};
use crate::expr::{format_real, write_quoted, Expr};

/// A ClassAd value. Lists and nested ads stay unevaluated until their items or attributes are
/// asked for, and remember the scope they came from, as in HTCondor.
#[derive(Debug, Clone)]
pub enum Value {
    Undefined,
    Error,
    Bool(bool),
    Int(i64),
    Real(f64),
    String(String),
    List(ListValue),
    Ad(AdValue),
}

/// A list: its item expressions and the scope they are evaluated in.
#[derive(Debug, Clone)]
pub struct ListValue {
    pub(crate) items: Arc<Vec<Expr>>,
    pub(crate) env: Env,
    /// Made by a function (split), not written in an expression: HTCondor keeps the two
    /// kinds apart, and `is` between lists of different kinds is false rather than error.
    pub(crate) computed: bool,
}

/// A nested ad, linked to the ad it was written in (its parent scope).
#[derive(Debug, Clone)]
pub struct AdValue {
    pub(crate) frame: Arc<Frame>,
    pub(crate) env: Env,
}

impl ListValue {
    pub(crate) fn literal(items: Vec<Expr>) -> ListValue {
        ListValue {
            items: Arc::new(items),
            env: Env::empty(),
            computed: true,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The item expressions, unevaluated.
    pub fn exprs(&self) -> &[Expr] {
        &self.items
    }

    /// Every item, evaluated.
    pub fn values(&self) -> Vec<Value> {
        (0..self.len())
            .map(|i| {
                let mut evaluator = Evaluator::new();
                let value = evaluator.list_item(self, i);
                evaluator.finish(value)
            })
            .collect()
    }
}

impl AdValue {
    pub fn ad(&self) -> &ClassAd {
        &self.frame.ad
    }

    /// Attribute `name` evaluated inside this ad (undefined when absent here and in the ads
    /// around it).
    pub fn eval_attr(&self, name: &str) -> Value {
        let mut evaluator = Evaluator::new();
        let value = evaluator.select(self, name);
        evaluator.finish(value)
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Undefined => "undefined",
            Value::Error => "error",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Real(_) => "real",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Ad(_) => "classad",
        }
    }

    pub fn is_undefined(&self) -> bool {
        matches!(self, Value::Undefined)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_real(&self) -> Option<f64> {
        match self {
            Value::Real(r) => Some(*r),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A scalar: a literal in HTCondor's unparse (`2.500000000000000E+00`, `"a\"b"`); a list or
/// ad: the unparse of its (unevaluated) items, `{ 1,"x" }`, `[ a = 1; b = 2 ]`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Undefined => f.write_str("undefined"),
            Value::Error => f.write_str("error"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Real(r) => f.write_str(&format_real(*r)),
            Value::String(s) => write_quoted(f, s, '"'),
            Value::List(list) => write!(f, "{}", Expr::List(list.items.to_vec())),
            Value::Ad(ad) => write!(f, "{}", ad.frame.ad),
        }
    }
}
