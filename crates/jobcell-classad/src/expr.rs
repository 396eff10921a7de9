//! The expression tree and its unparse (`Display`), in the text HTCondor's own unparser
//! writes: `%.15E` reals, `is`/`isnt`, explicit parentheses kept as written.

use std::fmt;

use crate::ad::ClassAd;

/// A literal constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Undefined,
    Error,
    Bool(bool),
    Int(i64),
    Real(f64),
    String(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Plus,
    Not,
    BitNot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    BitOr,
    BitXor,
    BitAnd,
    Eq,
    Ne,
    Is,
    Isnt,
    Lt,
    Le,
    Gt,
    Ge,
    Shl,
    Shr,
    UShr,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl BinaryOp {
    /// Binding strength as HTCondor's parser has it (higher binds tighter).
    pub(crate) fn precedence(self) -> u8 {
        use BinaryOp::*;
        match self {
            Or => 1,
            And => 2,
            BitOr => 3,
            BitXor => 4,
            BitAnd => 5,
            Eq | Ne | Is | Isnt => 6,
            Lt | Le | Gt | Ge => 7,
            Shl | Shr | UShr => 8,
            Add | Sub => 9,
            Mul | Div | Mod => 10,
        }
    }

    pub fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Or => "||",
            And => "&&",
            BitOr => "|",
            BitXor => "^",
            BitAnd => "&",
            Eq => "==",
            Ne => "!=",
            Is => "is",
            Isnt => "isnt",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            Shl => "<<",
            Shr => ">>",
            UShr => ">>>",
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Mod => "%",
        }
    }
}

impl UnaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            UnaryOp::Neg => "-",
            UnaryOp::Plus => "+",
            UnaryOp::Not => "!",
            UnaryOp::BitNot => "~",
        }
    }
}

/// A ClassAd expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Literal),
    /// `name`, or `.name` (absolute: looked up from the outermost ad).
    Attr {
        name: String,
        absolute: bool,
    },
    /// `base.name`; `MY.name` and `TARGET.name` are this with an `Attr` base.
    Select(Box<Expr>, String),
    /// `base[index]`
    Index(Box<Expr>, Box<Expr>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Parentheses as written: kept so the unparse reads like the source.
    Paren(Box<Expr>),
    Call(String, Vec<Expr>),
    List(Vec<Expr>),
    Ad(ClassAd),
}

impl Expr {
    pub fn int(i: i64) -> Expr {
        Expr::Literal(Literal::Int(i))
    }
    pub fn real(r: f64) -> Expr {
        Expr::Literal(Literal::Real(r))
    }
    pub fn string(s: impl Into<String>) -> Expr {
        Expr::Literal(Literal::String(s.into()))
    }
    pub fn bool(b: bool) -> Expr {
        Expr::Literal(Literal::Bool(b))
    }
}

/// A real as HTCondor unparses it: `%.15E`, with zero, infinities and NaN spelled apart.
pub(crate) fn format_real(r: f64) -> String {
    if r.is_nan() {
        return "real(\"NaN\")".into();
    }
    if r.is_infinite() {
        return if r > 0.0 {
            "real(\"INF\")"
        } else {
            "real(\"-INF\")"
        }
        .into();
    }
    if r == 0.0 {
        return if r.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let text = format!("{r:.15e}");
    let (mantissa, exponent) = text
        .split_once('e')
        .expect("{:e} always writes an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} writes a decimal exponent");
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}E{sign}{:02}", exponent.abs())
}

/// Writes `s` with HTCondor's string escapes, between `quote` characters.
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str, quote: char) -> fmt::Result {
    f.write_char(quote)?;
    for byte in s.bytes() {
        match byte {
            b'\\' => f.write_str("\\\\")?,
            b'\n' => f.write_str("\\n")?,
            b'\t' => f.write_str("\\t")?,
            b'\r' => f.write_str("\\r")?,
            0x08 => f.write_str("\\b")?,
            0x0c => f.write_str("\\f")?,
            0x0b => f.write_str("\\v")?,
            b if b as char == quote => write!(f, "\\{quote}")?,
            0x20..=0x7e => f.write_char(byte as char)?,
            _ => write!(f, "\\{byte:03o}")?,
        }
    }
    f.write_char(quote)
}

fn is_unsigned_number(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(Literal::Int(i)) => *i >= 0,
        Expr::Literal(Literal::Real(r)) => r.is_sign_positive() && r.is_finite(),
        _ => false,
    }
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !crate::parse::is_keyword(name)
}

/// An attribute name, quoted (`'a b'`) when it is no plain identifier.
pub(crate) fn write_name(f: &mut impl fmt::Write, name: &str) -> fmt::Result {
    if is_identifier(name) {
        f.write_str(name)
    } else {
        write_quoted(f, name, '\'')
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Undefined => f.write_str("undefined"),
            Literal::Error => f.write_str("error"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Real(r) => f.write_str(&format_real(*r)),
            Literal::String(s) => write_quoted(f, s, '"'),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(lit) => write!(f, "{lit}"),
            Expr::Attr { name, absolute } => {
                if *absolute {
                    f.write_str(".")?;
                }
                write_name(f, name)
            }
            Expr::Select(base, name) => {
                write!(f, "{base}.")?;
                write_name(f, name)
            }
            Expr::Index(base, index) => write!(f, "{base}[{index}]"),
            // `- 0` must not be read back as the literal 0: a space before a plain number.
            Expr::Unary(UnaryOp::Neg, operand) if is_unsigned_number(operand) => {
                write!(f, " - {operand}")
            }
            Expr::Unary(op, operand) => write!(f, " {}{operand}", op.symbol()),
            Expr::Binary(op, left, right) => write!(f, "{left} {} {right}", op.symbol()),
            Expr::Cond(cond, then, otherwise) => write!(f, "{cond} ? {then} : {otherwise}"),
            Expr::Paren(inner) => write!(f, "({inner})"),
            Expr::Call(name, args) => {
                write!(f, "{name}(")?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_str(")")
            }
            Expr::List(items) => {
                f.write_str("{ ")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(" }")
            }
            Expr::Ad(ad) => write!(f, "{ad}"),
        }
    }
}
