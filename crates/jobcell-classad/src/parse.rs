//! Lexer and parser for ClassAd expressions, with HTCondor's operator precedence.
//!
//! Hostile input is refused rather than allowed to exhaust the stack: the parser's own
//! recursion (`((((...`, `!!!!...`, `f(f(f(...`) stops at [`MAX_NESTING`] levels or the stack
//! budget, and every parse function returns the height of the tree it built, so that a long
//! `1+1+...` chain is refused at [`MAX_DEPTH`] before its evaluation or drop could recurse
//! that deep.

use crate::ad::ClassAd;
use crate::depth::StackGuard;
use crate::expr::{BinaryOp, Expr, Literal, UnaryOp};

/// The deepest expression tree accepted (a chain `a || b || ...` counts one level a term).
pub const MAX_DEPTH: usize = 500;

/// The deepest nesting of parentheses, calls, lists, ads and unary operators accepted.
pub const MAX_NESTING: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Int(u64),
    Real(f64),
    Str(String),
    Ident(String),
    QuotedName(String),
    Op(&'static str),
    End,
}

const KEYWORDS: [&str; 6] = ["true", "false", "undefined", "error", "is", "isnt"];

pub(crate) fn is_keyword(name: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(name))
}

/// Longest first, so `>>>` wins over `>>` and `>`.
const OPERATORS: [&str; 31] = [
    ">>>", "=?=", "=!=", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "+", "-", "*", "/", "%",
    "<", ">", "!", "~", "&", "|", "^", "?", ":", ".", ",", ";", "=", "(", ")",
];
const BRACKETS: [&str; 4] = ["[", "]", "{", "}"];

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    fn error(&self, column: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            column: column + 1,
            message: message.into(),
        }
    }

    fn peek_char(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    /// The next token and the column it starts at.
    fn next(&mut self) -> Result<(Token, usize), ParseError> {
        while self.peek_char(0).is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(c) = self.peek_char(0) else {
            return Ok((Token::End, start));
        };
        if c.is_ascii_digit() || (c == '.' && self.peek_char(1).is_some_and(|d| d.is_ascii_digit()))
        {
            return self.number().map(|t| (t, start));
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while self
                .peek_char(0)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.pos += 1;
            }
            let word: String = self.chars[start..self.pos].iter().collect();
            return Ok((Token::Ident(word), start));
        }
        if c == '"' {
            return self.quoted('"').map(|s| (Token::Str(s), start));
        }
        if c == '\'' {
            return self.quoted('\'').map(|s| (Token::QuotedName(s), start));
        }
        for op in OPERATORS.iter().chain(BRACKETS.iter()) {
            if op
                .chars()
                .enumerate()
                .all(|(i, oc)| self.peek_char(i) == Some(oc))
            {
                self.pos += op.chars().count();
                return Ok((Token::Op(op), start));
            }
        }
        Err(self.error(start, format!("unexpected character {c:?}")))
    }

    fn digits(&mut self) -> usize {
        let from = self.pos;
        while self.peek_char(0).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - from
    }

    fn number(&mut self) -> Result<Token, ParseError> {
        let start = self.pos;
        let mut real = false;
        self.digits();
        if self.peek_char(0) == Some('.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error(self.pos, "expected digits after the decimal point"));
            }
            real = true;
        }
        if matches!(self.peek_char(0), Some('e' | 'E')) {
            self.pos += 1;
            if matches!(self.peek_char(0), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error(self.pos, "expected digits in the exponent"));
            }
            real = true;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if real {
            text.parse()
                .map(Token::Real)
                .map_err(|_| self.error(start, format!("bad real number {text:?}")))
        } else {
            match text.parse::<u64>() {
                Ok(n) if n <= 1 << 63 => Ok(Token::Int(n)),
                _ => Err(self.error(start, format!("integer {text} is out of range"))),
            }
        }
    }

    /// A `"string"` or `'name'`, with C-like escapes as HTCondor reads them.
    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            let Some(c) = self.peek_char(0) else {
                return Err(self.error(start, format!("unterminated {quote}quote{quote}")));
            };
            self.pos += 1;
            if c == quote {
                break;
            }
            if c != '\\' {
                let mut buf = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            let Some(e) = self.peek_char(0) else {
                return Err(self.error(start, format!("unterminated {quote}quote{quote}")));
            };
            self.pos += 1;
            let byte = match e {
                'n' => b'\n',
                't' => b'\t',
                'r' => b'\r',
                'b' => 0x08,
                'f' => 0x0c,
                'v' => 0x0b,
                'a' => 0x07,
                '0'..='7' => {
                    // Up to three octal digits, but only two when the first is above 3.
                    let max_digits = if e <= '3' { 3 } else { 2 };
                    let mut value = e as u32 - '0' as u32;
                    let mut count = 1;
                    while count < max_digits {
                        match self.peek_char(0) {
                            Some(d @ '0'..='7') => {
                                value = value * 8 + (d as u32 - '0' as u32);
                                self.pos += 1;
                                count += 1;
                            }
                            _ => break,
                        }
                    }
                    if value == 0 {
                        return Err(self.error(self.pos - count - 1, "a NUL byte in a string"));
                    }
                    value as u8
                }
                other => {
                    let mut buf = [0; 4];
                    bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
            };
            bytes.push(byte);
        }
        String::from_utf8(bytes).map_err(|_| self.error(start, "string is not valid UTF-8"))
    }
}

/// A recursive-descent parser over a token list.
struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    /// Parse functions active now: bounds the recursion before a tree is even built.
    nesting: usize,
    stack: StackGuard,
    lexer_columns_end: usize,
}

type Parsed = (Expr, usize);

impl Parser {
    fn new(text: &str) -> Result<Self, ParseError> {
        let mut lexer = Lexer {
            chars: text.chars().collect(),
            pos: 0,
        };
        let mut tokens = Vec::new();
        loop {
            let (token, column) = lexer.next()?;
            let end = token == Token::End;
            tokens.push((token, column));
            if end {
                break;
            }
        }
        Ok(Parser {
            tokens,
            pos: 0,
            nesting: 0,
            stack: StackGuard::new(),
            lexer_columns_end: lexer.chars.len(),
        })
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.pos].0
    }

    fn peek_at(&self, offset: usize) -> &Token {
        let i = (self.pos + offset).min(self.tokens.len() - 1);
        &self.tokens[i].0
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.lexer_columns_end, |t| t.1)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            column: self.column() + 1,
            message: message.into(),
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            Token::Int(n) => format!("number {n}"),
            Token::Real(r) => format!("number {r}"),
            Token::Str(s) => format!("string {s:?}"),
            Token::Ident(s) => format!("{s:?}"),
            Token::QuotedName(s) => format!("'{s}'"),
            Token::Op(op) => format!("{op:?}"),
            Token::End => "end of input".into(),
        }
    }

    fn bump(&mut self) -> Token {
        let token = self.tokens[self.pos].0.clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Token::Op(o) if *o == op)
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ParseError> {
        if self.is_op(op) {
            self.bump();
            Ok(())
        } else {
            Err(self.expected(op))
        }
    }

    #[cold]
    #[inline(never)]
    fn expected(&self, op: &str) -> ParseError {
        self.error(format!("expected {op:?}, found {}", self.describe()))
    }

    #[cold]
    #[inline(never)]
    fn too_deeply_nested(&self) -> ParseError {
        self.error(format!(
            "expression nested more than {MAX_NESTING} levels deep"
        ))
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self) -> ParseError {
        self.error(format!("expression nested deeper than {MAX_DEPTH} levels"))
    }

    fn check_depth(&self, depth: usize) -> Result<usize, ParseError> {
        if depth > MAX_DEPTH {
            Err(self.too_deep())
        } else {
            Ok(depth)
        }
    }

    /// Runs `f` one level deeper, refusing to go past MAX_NESTING levels or the stack budget.
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.nesting >= MAX_NESTING || self.stack.exhausted() {
            return Err(self.too_deeply_nested());
        }
        self.nesting += 1;
        let result = f(self);
        self.nesting -= 1;
        result
    }

    fn expr(&mut self) -> Result<Parsed, ParseError> {
        self.nested(Self::conditional)
    }

    fn conditional(&mut self) -> Result<Parsed, ParseError> {
        let (cond, depth) = self.binary(1)?;
        if !self.is_op("?") {
            return Ok((cond, depth));
        }
        self.bump();
        let (then, then_depth) = self.expr()?;
        self.expect_op(":")?;
        let (otherwise, else_depth) = self.expr()?;
        let depth = self.check_depth(1 + depth.max(then_depth).max(else_depth))?;
        Ok((
            Expr::Cond(Box::new(cond), Box::new(then), Box::new(otherwise)),
            depth,
        ))
    }

    fn binary_op(&self) -> Option<BinaryOp> {
        use BinaryOp::*;
        Some(match self.peek() {
            Token::Op(op) => match *op {
                "||" => Or,
                "&&" => And,
                "|" => BitOr,
                "^" => BitXor,
                "&" => BitAnd,
                "==" => Eq,
                "!=" => Ne,
                "=?=" => Is,
                "=!=" => Isnt,
                "<" => Lt,
                "<=" => Le,
                ">" => Gt,
                ">=" => Ge,
                "<<" => Shl,
                ">>" => Shr,
                ">>>" => UShr,
                "+" => Add,
                "-" => Sub,
                "*" => Mul,
                "/" => Div,
                "%" => Mod,
                _ => return None,
            },
            Token::Ident(word) if word.eq_ignore_ascii_case("is") => Is,
            Token::Ident(word) if word.eq_ignore_ascii_case("isnt") => Isnt,
            _ => return None,
        })
    }

    /// Precedence climbing; every binary operator is left-associative.
    fn binary(&mut self, min_precedence: u8) -> Result<Parsed, ParseError> {
        let (mut left, mut depth) = self.unary()?;
        while let Some(op) = self.binary_op() {
            if op.precedence() < min_precedence {
                break;
            }
            self.bump();
            let (right, right_depth) = self.binary(op.precedence() + 1)?;
            depth = self.check_depth(1 + depth.max(right_depth))?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok((left, depth))
    }

    fn unary(&mut self) -> Result<Parsed, ParseError> {
        let op = match self.peek() {
            Token::Op("-") => UnaryOp::Neg,
            Token::Op("+") => UnaryOp::Plus,
            Token::Op("!") => UnaryOp::Not,
            Token::Op("~") => UnaryOp::BitNot,
            _ => return self.postfix(),
        };
        let minus_column = self.column();
        self.bump();
        // A minus right against a number is a negative literal, as HTCondor reads it.
        if op == UnaryOp::Neg && self.column() == minus_column + 1 {
            let literal = match *self.peek() {
                Token::Int(n) => Some(Literal::Int((n as i64).wrapping_neg())),
                Token::Real(r) => Some(Literal::Real(-r)),
                _ => None,
            };
            if let Some(literal) = literal {
                if !matches!(self.peek_at(1), Token::Op("." | "[")) {
                    self.bump();
                    return Ok((Expr::Literal(literal), 1));
                }
            }
        }
        let (operand, depth) = self.nested(Self::unary)?;
        let depth = self.check_depth(depth + 1)?;
        Ok((Expr::Unary(op, Box::new(operand)), depth))
    }

    fn postfix(&mut self) -> Result<Parsed, ParseError> {
        let (mut base, mut depth) = self.primary()?;
        loop {
            if self.is_op(".") {
                self.bump();
                let name = self.attribute_name()?;
                depth = self.check_depth(depth + 1)?;
                base = Expr::Select(Box::new(base), name);
            } else if self.is_op("[") {
                self.bump();
                let (index, index_depth) = self.expr()?;
                self.expect_op("]")?;
                depth = self.check_depth(1 + depth.max(index_depth))?;
                base = Expr::Index(Box::new(base), Box::new(index));
            } else {
                return Ok((base, depth));
            }
        }
    }

    fn attribute_name(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Token::Ident(name) if !is_keyword(&name) => {
                self.bump();
                Ok(name)
            }
            Token::QuotedName(name) => {
                self.bump();
                Ok(name)
            }
            _ => Err(self.error(format!(
                "expected an attribute name, found {}",
                self.describe()
            ))),
        }
    }

    /// One operand. The arms that recurse live in their own small functions, so that each
    /// level of nesting costs little stack.
    fn primary(&mut self) -> Result<Parsed, ParseError> {
        match self.peek() {
            Token::Op("(") => self.parenthesized(),
            Token::Op("{") => self.list(),
            Token::Op("[") => self.nested_ad(),
            Token::Ident(_) if matches!(self.peek_at(1), Token::Op("(")) => self.call(),
            _ => self.leaf(),
        }
    }

    fn parenthesized(&mut self) -> Result<Parsed, ParseError> {
        self.bump();
        let (inner, depth) = self.expr()?;
        self.expect_op(")")?;
        let depth = self.check_depth(depth + 1)?;
        Ok((Expr::Paren(Box::new(inner)), depth))
    }

    fn list(&mut self) -> Result<Parsed, ParseError> {
        self.bump();
        let (items, depth) = self.sequence("}", ",")?;
        Ok((Expr::List(items), depth))
    }

    fn nested_ad(&mut self) -> Result<Parsed, ParseError> {
        self.bump();
        let (ad, depth) = self.ad_body()?;
        Ok((Expr::Ad(ad), depth))
    }

    fn call(&mut self) -> Result<Parsed, ParseError> {
        let Token::Ident(name) = self.bump() else {
            unreachable!("call() follows an identifier")
        };
        if is_keyword(&name) {
            return Err(self.unexpected_keyword(&name));
        }
        self.bump();
        let (args, depth) = self.sequence(")", ",")?;
        Ok((Expr::Call(name, args), depth))
    }

    /// A literal or an attribute reference: no recursion.
    #[inline(never)]
    fn leaf(&mut self) -> Result<Parsed, ParseError> {
        let expr = match self.peek().clone() {
            Token::Int(n) if n > i64::MAX as u64 => {
                return Err(self.error(format!("integer {n} is out of range")))
            }
            Token::Int(n) => Expr::Literal(Literal::Int(n as i64)),
            Token::Real(r) => Expr::Literal(Literal::Real(r)),
            Token::Str(s) => Expr::Literal(Literal::String(s)),
            Token::QuotedName(name) => Expr::Attr {
                name,
                absolute: false,
            },
            Token::Ident(word) => match word.to_ascii_lowercase().as_str() {
                "true" => Expr::Literal(Literal::Bool(true)),
                "false" => Expr::Literal(Literal::Bool(false)),
                "undefined" => Expr::Literal(Literal::Undefined),
                "error" => Expr::Literal(Literal::Error),
                "is" | "isnt" => return Err(self.unexpected_keyword(&word)),
                _ => Expr::Attr {
                    name: word,
                    absolute: false,
                },
            },
            Token::Op(".") => {
                self.bump();
                let name = self.attribute_name()?;
                return Ok((
                    Expr::Attr {
                        name,
                        absolute: true,
                    },
                    1,
                ));
            }
            _ => {
                return Err(self.error(format!("expected an expression, found {}", self.describe())))
            }
        };
        self.bump();
        Ok((expr, 1))
    }

    #[cold]
    fn unexpected_keyword(&self, word: &str) -> ParseError {
        self.error(format!("unexpected operator {word:?}"))
    }

    /// Comma-separated expressions up to `close` (function arguments, list items).
    fn sequence(&mut self, close: &str, separator: &str) -> Result<(Vec<Expr>, usize), ParseError> {
        let mut items = Vec::new();
        let mut depth = 1;
        if self.is_op(close) {
            self.bump();
            return Ok((items, depth));
        }
        loop {
            let (item, item_depth) = self.expr()?;
            depth = self.check_depth(depth.max(item_depth + 1))?;
            items.push(item);
            if self.is_op(separator) {
                self.bump();
            } else {
                self.expect_op(close)?;
                return Ok((items, depth));
            }
        }
    }

    /// `name = expr; ...` up to the closing `]` (the `[` is already read).
    fn ad_body(&mut self) -> Result<(ClassAd, usize), ParseError> {
        let mut ad = ClassAd::new();
        let mut depth = 1;
        loop {
            if self.is_op("]") {
                self.bump();
                return Ok((ad, depth));
            }
            let name = self.attribute_name()?;
            self.expect_op("=")?;
            let (value, value_depth) = self.expr()?;
            depth = self.check_depth(depth.max(value_depth + 1))?;
            ad.insert(name, value);
            if self.is_op(";") {
                self.bump();
            } else if !self.is_op("]") {
                return Err(self.error(format!("expected ';' or ']', found {}", self.describe())));
            }
        }
    }

    fn finish(&self) -> Result<(), ParseError> {
        if *self.peek() == Token::End {
            Ok(())
        } else {
            Err(self.error(format!(
                "unexpected {} after the expression",
                self.describe()
            )))
        }
    }
}

/// Parses one whole expression.
pub fn parse_expr(text: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser::new(text)?;
    let (expr, _) = parser.expr()?;
    parser.finish()?;
    Ok(expr)
}

/// Parses a new-syntax ad, `[ name = expr; ... ]`.
pub fn parse_ad(text: &str) -> Result<ClassAd, ParseError> {
    let mut parser = Parser::new(text)?;
    parser.expect_op("[")?;
    let (ad, _) = parser.ad_body()?;
    parser.finish()?;
    Ok(ad)
}

/// Parses the `name = expr` of one old-syntax line.
pub fn parse_assignment(text: &str) -> Result<(String, Expr), ParseError> {
    let mut parser = Parser::new(text)?;
    let name = parser.attribute_name()?;
    parser.expect_op("=")?;
    let (expr, _) = parser.expr()?;
    parser.finish()?;
    Ok((name, expr))
}
