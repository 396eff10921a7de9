//! HTCondor's ClassAd expression language: parse, unparse and evaluate expressions and ads.
//!
//! ```
//! use jobcell_classad::{ClassAd, Expr, Value};
//!
//! let job = ClassAd::parse("RequestCpus = 4\nOwner = \"alice\"").unwrap();
//! let machine = ClassAd::parse("[ Cpus = 8; Arch = \"X86_64\" ]").unwrap();
//! let requirements = Expr::parse("TARGET.Cpus >= MY.RequestCpus && owner == \"ALICE\"").unwrap();
//! assert!(matches!(requirements.eval_in(&job, Some(&machine)), Value::Bool(true)));
//! ```
//!
//! Values follow HTCondor 23.10: `undefined` and `error` propagate through operators and
//! functions as HTCondor's own library does; the crate's differential test evaluates
//! generated expressions with both and demands the same value and type.

mod ad;
mod depth;
mod eval;
mod expr;
mod functions;
mod parse;
mod value;

pub use ad::{AdParseError, ClassAd};
pub use depth::STACK_BUDGET;
pub use eval::{EvalBudget, MAX_EVAL_DEPTH};
pub use expr::{BinaryOp, Expr, Literal, UnaryOp};
pub use parse::{ParseError, MAX_DEPTH, MAX_NESTING};
pub use value::{AdValue, ListValue, Value};

impl Expr {
    /// Parses one expression; the error names the column.
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        parse::parse_expr(text)
    }
}

impl std::str::FromStr for Expr {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Expr, ParseError> {
        Expr::parse(text)
    }
}
