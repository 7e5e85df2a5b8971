//! Finding the `vif` setting in a whole xl domain config file.
//!
//! The file is scanned the way libxlu's lexer does, so a `#` or `]` inside some
//! other setting's string cannot derail us: settings are `name = value` or
//! `name += value`, ended by a newline or `;`; values are quoted strings, bare
//! words (numbers, identifiers) or `[ ... ]` lists, which may span lines and
//! nest; `#` starts a comment. Only `vif` is interpreted, other settings are
//! skipped.

use crate::{parse_vif, VifSpec, XlError};

/// Parses every element of the config's `vif` list. No `vif` setting gives an
/// empty vec. As in xl, a later `vif =` replaces an earlier one and `vif +=`
/// appends to it.
pub fn parse_vif_setting(cfg: &str) -> Result<Vec<VifSpec>, XlError> {
    let tokens = scan(cfg)?;
    let mut p = Parser { tokens, pos: 0 };
    let mut elements: Vec<(String, usize)> = Vec::new();

    while let Some(tok) = p.next() {
        let (name, line) = match tok {
            Tok {
                kind: Kind::End, ..
            } => continue,
            Tok {
                kind: Kind::Word(w),
                line,
            } => (w, line),
            Tok { line, .. } => return Err(syntax(line, "expected a setting name")),
        };
        let append = match p.next() {
            Some(Tok { kind: Kind::Eq, .. }) => false,
            Some(Tok {
                kind: Kind::PlusEq, ..
            }) => true,
            _ => return Err(syntax(line, "expected '=' after a setting name")),
        };
        let value = p.value()?;
        match p.next() {
            None
            | Some(Tok {
                kind: Kind::End, ..
            }) => {}
            Some(t) => return Err(syntax(t.line, "expected end of line after a value")),
        }
        if name != "vif" {
            continue;
        }
        let Value::List(items) = value else {
            return Err(syntax(line, "vif must be a list of strings"));
        };
        if !append {
            elements.clear();
        }
        for item in items {
            match item {
                Value::Str(s, line) => elements.push((s, line)),
                _ => return Err(syntax(line, "vif must be a list of strings")),
            }
        }
    }

    elements
        .iter()
        .enumerate()
        .map(|(index, (s, line))| {
            parse_vif(s).map_err(|e| XlError::Element {
                index,
                line: *line,
                error: Box::new(e),
            })
        })
        .collect()
}

fn syntax(line: usize, msg: &'static str) -> XlError {
    XlError::Syntax { line, msg }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Word(String),
    Str(String),
    Eq,
    PlusEq,
    Open,
    Close,
    Comma,
    /// A newline or `;`: the end of a setting, except inside a list.
    End,
}

#[derive(Debug, Clone)]
struct Tok {
    kind: Kind,
    line: usize,
}

/// Characters that end a bare word.
fn is_special(c: char) -> bool {
    c.is_whitespace() || "'\"#=[],;".contains(c)
}

fn scan(text: &str) -> Result<Vec<Tok>, XlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        let kind = match c {
            '\n' => {
                out.push(Tok {
                    kind: Kind::End,
                    line,
                });
                line += 1;
                continue;
            }
            c if c.is_whitespace() => continue,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '\'' | '"' => Kind::Str(string(c, &chars, &mut i, line)?),
            '=' => Kind::Eq,
            '+' if chars.get(i) == Some(&'=') => {
                i += 1;
                Kind::PlusEq
            }
            '[' => Kind::Open,
            ']' => Kind::Close,
            ',' => Kind::Comma,
            ';' => Kind::End,
            c => {
                let mut w = String::from(c);
                // A word also ends before `+=`, as in `vif+=[...]`.
                while i < chars.len()
                    && !is_special(chars[i])
                    && !(chars[i] == '+' && chars.get(i + 1) == Some(&'='))
                {
                    w.push(chars[i]);
                    i += 1;
                }
                Kind::Word(w)
            }
        };
        out.push(Tok { kind, line });
    }
    Ok(out)
}

/// The rest of a quoted string, after the opening `quote`. Both quote styles
/// take libxlu's simple backslash escapes; strings cannot span lines.
fn string(quote: char, chars: &[char], i: &mut usize, line: usize) -> Result<String, XlError> {
    let mut next = || {
        let c = chars.get(*i).copied();
        *i += 1;
        c
    };
    let mut s = String::new();
    loop {
        match next() {
            None | Some('\n') => return Err(syntax(line, "unterminated string")),
            Some(c) if c == quote => return Ok(s),
            Some('\\') => s.push(match next() {
                Some(c @ ('"' | '\'' | '\\')) => c,
                Some('n') => '\n',
                Some('t') => '\t',
                Some('r') => '\r',
                // \x, octal and the rarer C escapes never occur in vif specs.
                _ => return Err(syntax(line, "unsupported escape in string")),
            }),
            Some(c) => s.push(c),
        }
    }
}

enum Value {
    Str(String, usize),
    Word,
    List(Vec<Value>),
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// The next token, skipping line ends (used inside lists).
    fn next_in_list(&mut self, open_line: usize) -> Result<Tok, XlError> {
        loop {
            match self.next() {
                Some(Tok {
                    kind: Kind::End, ..
                }) => {}
                Some(t) => return Ok(t),
                None => return Err(syntax(open_line, "unterminated list")),
            }
        }
    }

    fn value(&mut self) -> Result<Value, XlError> {
        match self.next() {
            Some(Tok {
                kind: Kind::Str(s),
                line,
            }) => Ok(Value::Str(s, line)),
            Some(Tok {
                kind: Kind::Word(_),
                ..
            }) => Ok(Value::Word),
            Some(Tok {
                kind: Kind::Open,
                line,
            }) => self.list(line),
            Some(t) => Err(syntax(t.line, "expected a value")),
            None => Err(syntax(self.last_line(), "expected a value")),
        }
    }

    /// Items after `[`: values separated by commas, a trailing comma allowed.
    fn list(&mut self, open_line: usize) -> Result<Value, XlError> {
        let mut items = Vec::new();
        loop {
            let t = self.next_in_list(open_line)?;
            if t.kind == Kind::Close {
                return Ok(Value::List(items));
            }
            // Step back so value() sees the token just peeked.
            self.pos -= 1;
            items.push(self.value()?);
            let t = self.next_in_list(open_line)?;
            match t.kind {
                Kind::Comma => {}
                Kind::Close => return Ok(Value::List(items)),
                _ => return Err(syntax(t.line, "expected ',' or ']' in a list")),
            }
        }
    }

    fn last_line(&self) -> usize {
        self.tokens.last().map_or(1, |t| t.line)
    }
}
