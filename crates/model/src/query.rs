//! The expression language of `get_all_records_where` (XAPI's db_filter):
//! `true`, `false`, `field "name__label" = "x"`, `<>`, `not`, `and`, `or`,
//! parentheses. Field names use the database form (`__` for `_`).

use crate::db::{self, Record};
use crate::error::{ApiError, ApiResult};
use xapi_wire::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    True,
    False,
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Operand, Operand),
    Ne(Operand, Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(String),
    Literal(String),
}

impl Expr {
    pub fn eval(&self, rec: &Record) -> bool {
        match self {
            Expr::True => true,
            Expr::False => false,
            Expr::Not(e) => !e.eval(rec),
            Expr::And(a, b) => a.eval(rec) && b.eval(rec),
            Expr::Or(a, b) => a.eval(rec) || b.eval(rec),
            Expr::Eq(a, b) => a.value(rec) == b.value(rec),
            Expr::Ne(a, b) => a.value(rec) != b.value(rec),
        }
    }
}

impl Operand {
    fn value(&self, rec: &Record) -> String {
        match self {
            Operand::Literal(s) => s.clone(),
            Operand::Field(f) => match rec.get(f) {
                Some(Value::String(s)) | Some(Value::DateTime(s)) => s.clone(),
                Some(Value::Int(i)) => i.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Float(x)) => x.to_string(),
                _ => db::s(rec, f).to_string(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    LParen,
    RParen,
    Eq,
    Ne,
}

fn lex(s: &str) -> Option<Vec<Tok>> {
    let mut out = vec![];
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                it.next();
            }
            '(' => {
                it.next();
                out.push(Tok::LParen)
            }
            ')' => {
                it.next();
                out.push(Tok::RParen)
            }
            '=' => {
                it.next();
                out.push(Tok::Eq)
            }
            '<' => {
                it.next();
                if it.next() != Some('>') {
                    return None;
                }
                out.push(Tok::Ne)
            }
            '"' => {
                it.next();
                let mut lit = String::new();
                loop {
                    match it.next()? {
                        '\\' => lit.push(it.next()?),
                        '"' => break,
                        ch => lit.push(ch),
                    }
                }
                out.push(Tok::Quoted(lit))
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = it.peek() {
                    if ch.is_alphanumeric() || ch == '_' {
                        w.push(ch);
                        it.next();
                    } else {
                        break;
                    }
                }
                if w.is_empty() {
                    return None;
                }
                out.push(Tok::Word(w))
            }
        }
    }
    Some(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Option<Expr> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Word("or".into())) {
            self.next();
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Some(e)
    }
    fn and(&mut self) -> Option<Expr> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Tok::Word("and".into())) {
            self.next();
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Some(e)
    }
    fn unary(&mut self) -> Option<Expr> {
        self.depth += 1;
        if self.depth > 64 {
            return None;
        }
        let r = match self.peek()? {
            Tok::Word(w) if w == "not" => {
                self.next();
                Some(Expr::Not(Box::new(self.unary()?)))
            }
            Tok::Word(w) if w == "true" => {
                self.next();
                Some(Expr::True)
            }
            Tok::Word(w) if w == "false" => {
                self.next();
                Some(Expr::False)
            }
            Tok::LParen => {
                self.next();
                let e = self.or()?;
                (self.next()? == Tok::RParen).then_some(e)
            }
            _ => {
                let a = self.operand()?;
                let op = self.next()?;
                let b = self.operand()?;
                match op {
                    Tok::Eq => Some(Expr::Eq(a, b)),
                    Tok::Ne => Some(Expr::Ne(a, b)),
                    _ => None,
                }
            }
        };
        self.depth -= 1;
        r
    }
    fn operand(&mut self) -> Option<Operand> {
        match self.next()? {
            Tok::Word(w) if w == "field" => match self.next()? {
                Tok::Quoted(f) => Some(Operand::Field(f.replace("__", "_"))),
                _ => None,
            },
            Tok::Quoted(s) => Some(Operand::Literal(s)),
            _ => None,
        }
    }
}

/// Parses an expression; a syntax error is XAPI's `INVALID_VALUE`-style
/// failure naming the expression.
pub fn parse(s: &str) -> ApiResult<Expr> {
    let bad = || ApiError::invalid_value("expr", s);
    let toks = lex(s).ok_or_else(bad)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.or().ok_or_else(bad)?;
    if p.pos != p.toks.len() {
        return Err(bad());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_and_evaluates() {
        let mut rec = Record::new();
        rec.insert("name_label".into(), Value::String("a b".into()));
        rec.insert("MTU".into(), Value::Int(1500));
        assert!(parse("true").unwrap().eval(&rec));
        assert!(parse(r#"field "name__label" = "a b""#).unwrap().eval(&rec));
        assert!(
            parse(r#"field "MTU"="1500" and not (field "name__label" <> "a b")"#)
                .unwrap()
                .eval(&rec)
        );
        assert!(!parse(r#"false or field "MTU" = "9000""#)
            .unwrap()
            .eval(&rec));
        assert!(parse("field").is_err());
        assert!(parse("true true").is_err());
        assert!(parse(&"(".repeat(1000)).is_err());
    }
}
