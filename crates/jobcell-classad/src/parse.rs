//! Lexer and parser for ClassAd expressions, with HTCondor's operator precedence.
//!
//! Every parse function returns the height of the tree it built: a hostile input (a long
//! `1+1+...` chain, `((((...`, `!!!!...`) is refused at [`MAX_DEPTH`] instead of building a
//! tree whose evaluation or drop would exhaust the stack.

use crate::ad::ClassAd;
use crate::expr::{BinaryOp, Expr, Literal, UnaryOp};

/// The deepest expression tree accepted.
pub const MAX_DEPTH: usize = 200;

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

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    _text: &'a str,
}

impl<'a> Lexer<'a> {
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
struct Parser<'a> {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    lexer_columns_end: usize,
    _text: &'a str,
}

type Parsed = (Expr, usize);

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, ParseError> {
        let mut lexer = Lexer {
            chars: text.chars().collect(),
            pos: 0,
            _text: text,
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
            lexer_columns_end: lexer.chars.len(),
            _text: text,
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
            Err(self.error(format!("expected {op:?}, found {}", self.describe())))
        }
    }

    fn check_depth(&self, depth: usize) -> Result<usize, ParseError> {
        if depth > MAX_DEPTH {
            Err(self.error(format!("expression nested deeper than {MAX_DEPTH} levels")))
        } else {
            Ok(depth)
        }
    }

    fn expr(&mut self) -> Result<Parsed, ParseError> {
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
        let (operand, depth) = self.unary()?;
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

    fn primary(&mut self) -> Result<Parsed, ParseError> {
        let token = self.peek().clone();
        let literal = |l| Ok((Expr::Literal(l), 1));
        match token {
            Token::Int(n) => {
                if n > i64::MAX as u64 {
                    return Err(self.error(format!("integer {n} is out of range")));
                }
                self.bump();
                literal(Literal::Int(n as i64))
            }
            Token::Real(r) => {
                self.bump();
                literal(Literal::Real(r))
            }
            Token::Str(s) => {
                self.bump();
                literal(Literal::String(s))
            }
            Token::QuotedName(name) => {
                self.bump();
                Ok((
                    Expr::Attr {
                        name,
                        absolute: false,
                    },
                    1,
                ))
            }
            Token::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                let keyword = match lower.as_str() {
                    "true" => Some(Literal::Bool(true)),
                    "false" => Some(Literal::Bool(false)),
                    "undefined" => Some(Literal::Undefined),
                    "error" => Some(Literal::Error),
                    "is" | "isnt" => {
                        return Err(self.error(format!("unexpected operator {word:?}")))
                    }
                    _ => None,
                };
                self.bump();
                if let Some(l) = keyword {
                    return literal(l);
                }
                if self.is_op("(") {
                    self.bump();
                    let (args, depth) = self.sequence(")", ",")?;
                    return Ok((Expr::Call(word, args), depth));
                }
                Ok((
                    Expr::Attr {
                        name: word,
                        absolute: false,
                    },
                    1,
                ))
            }
            Token::Op(".") => {
                self.bump();
                let name = self.attribute_name()?;
                Ok((
                    Expr::Attr {
                        name,
                        absolute: true,
                    },
                    1,
                ))
            }
            Token::Op("(") => {
                self.bump();
                let (inner, depth) = self.expr()?;
                self.expect_op(")")?;
                let depth = self.check_depth(depth + 1)?;
                Ok((Expr::Paren(Box::new(inner)), depth))
            }
            Token::Op("{") => {
                self.bump();
                let (items, depth) = self.sequence("}", ",")?;
                Ok((Expr::List(items), depth))
            }
            Token::Op("[") => {
                self.bump();
                let (ad, depth) = self.ad_body()?;
                Ok((Expr::Ad(ad), depth))
            }
            _ => Err(self.error(format!("expected an expression, found {}", self.describe()))),
        }
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
