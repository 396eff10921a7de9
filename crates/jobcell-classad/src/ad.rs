//! `ClassAd`: a case-insensitive map from attribute name to expression.

use std::fmt;
use std::sync::Arc;

use crate::eval::Evaluator;
use crate::expr::{write_name, Expr};
use crate::parse::{parse_ad, parse_assignment, ParseError};
use crate::value::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdParseError {
    #[error("line {line}: {source}")]
    Line { line: usize, source: ParseError },
    #[error("{0}")]
    Bracketed(ParseError),
}

/// Attributes in insertion order; names compare without regard to ASCII case. Cloning is
/// cheap (the attributes are shared until one copy changes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassAd {
    attrs: Arc<Vec<(String, Expr)>>,
}

impl ClassAd {
    pub fn new() -> ClassAd {
        ClassAd::default()
    }

    /// Parses `[ name = expr; ... ]`, or else the `Name = expr` lines `jobcell q -l` prints
    /// (blank lines skipped).
    pub fn parse(text: &str) -> Result<ClassAd, AdParseError> {
        if text.trim_start().starts_with('[') {
            return parse_ad(text).map_err(AdParseError::Bracketed);
        }
        let mut ad = ClassAd::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (name, expr) = parse_assignment(line).map_err(|source| AdParseError::Line {
                line: i + 1,
                source,
            })?;
            ad.insert(name, expr);
        }
        Ok(ad)
    }

    /// Sets `name`, replacing an attribute of the same name in any case (the new spelling wins).
    pub fn insert(&mut self, name: impl Into<String>, expr: Expr) {
        let name = name.into();
        let attrs = Arc::make_mut(&mut self.attrs);
        match attrs
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(slot) => *slot = (name, expr),
            None => attrs.push((name, expr)),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Expr> {
        let i = self.index_of(name)?;
        Some(Arc::make_mut(&mut self.attrs).remove(i).1)
    }

    pub fn get(&self, name: &str) -> Option<&Expr> {
        self.index_of(name).map(|i| &self.attrs[i].1)
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.attrs
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    pub(crate) fn entry(&self, index: usize) -> &(String, Expr) {
        &self.attrs[index]
    }

    /// Identifies the shared attribute storage (for spotting an attribute that refers to itself).
    pub(crate) fn storage_id(&self) -> usize {
        Arc::as_ptr(&self.attrs) as usize
    }

    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Expr)> {
        self.attrs.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// `expr` evaluated with this ad as MY and no TARGET.
    pub fn eval(&self, expr: &Expr) -> Value {
        expr.eval_in(self, None)
    }

    /// The value of attribute `name` (undefined when absent).
    pub fn eval_attr(&self, name: &str) -> Value {
        Evaluator::eval_attr_of(self, None, name)
    }

    /// Attribute `name` evaluated with this ad as MY and `target` as TARGET.
    pub fn eval_attr_against(&self, name: &str, target: &ClassAd) -> Value {
        Evaluator::eval_attr_of(self, Some(target), name)
    }
}

impl fmt::Display for ClassAd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[ ")?;
        for (i, (name, expr)) in self.attrs.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write_name(f, name)?;
            write!(f, " = {expr}")?;
        }
        f.write_str(" ]")
    }
}
