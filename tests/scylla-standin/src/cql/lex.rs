//! The lexer: CQL text into tokens (`cql/definitions.html`: identifiers, constants,
//! comments).

use crate::error::CqlError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    /// An unquoted identifier or keyword, lower-cased.
    Word(String),
    /// A double-quoted identifier.
    Quoted(String),
    Str(String),
    Integer(i128),
    Float(f64),
    Blob(Vec<u8>),
    Uuid([u8; 16]),
    Symbol(&'static str),
    Marker(Option<String>),
}

const SYMBOLS: [&str; 16] = [
    "<=", ">=", "!=", "(", ")", ",", ";", ".", "=", "<", ">", "*", "{", "}", "[", "]",
];

pub(super) fn lex(text: &str) -> Result<Vec<Token>, CqlError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if text[i..].starts_with("--") || text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        }
        if let Some(uuid) = uuid_at(&text[i..]) {
            tokens.push(Token::Uuid(uuid));
            i += 36;
            continue;
        }
        match c {
            b'\'' => {
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    let Some(rest) = text.get(j..) else {
                        return Err(CqlError::Syntax("unterminated string".into()));
                    };
                    let Some(n) = rest.find('\'') else {
                        return Err(CqlError::Syntax("unterminated string".into()));
                    };
                    s.push_str(&rest[..n]);
                    j += n + 1;
                    if bytes.get(j) == Some(&b'\'') {
                        s.push('\'');
                        j += 1;
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Str(s));
                i = j;
            }
            b'"' => {
                let rest = &text[i + 1..];
                let n = rest
                    .find('"')
                    .ok_or_else(|| CqlError::Syntax("unterminated quoted identifier".into()))?;
                tokens.push(Token::Quoted(rest[..n].to_string()));
                i += n + 2;
            }
            b'?' => {
                tokens.push(Token::Marker(None));
                i += 1;
            }
            b':' => {
                let end = word_end(bytes, i + 1);
                if end == i + 1 {
                    tokens.push(Token::Symbol(":"));
                } else {
                    tokens.push(Token::Marker(Some(text[i + 1..end].to_ascii_lowercase())));
                }
                i = end;
            }
            b'0' if matches!(bytes.get(i + 1), Some(b'x' | b'X')) => {
                let end = word_end(bytes, i + 2);
                let hex = &text[i + 2..end];
                if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(CqlError::Syntax(format!("bad blob literal 0x{hex}")));
                }
                let blob = (0..hex.len())
                    .step_by(2)
                    .map(|k| u8::from_str_radix(&hex[k..k + 2], 16).unwrap_or(0))
                    .collect();
                tokens.push(Token::Blob(blob));
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                if matches!(bytes.get(i), Some(b'e' | b'E')) {
                    i += 1;
                    if matches!(bytes.get(i), Some(b'-' | b'+')) {
                        i += 1;
                    }
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let number = &text[start..i];
                if let Ok(n) = number.parse::<i128>() {
                    tokens.push(Token::Integer(n));
                } else if let Ok(f) = number.parse::<f64>() {
                    tokens.push(Token::Float(f));
                } else {
                    return Err(CqlError::Syntax(format!("bad number {number}")));
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = word_end(bytes, i);
                tokens.push(Token::Word(text[i..end].to_ascii_lowercase()));
                i = end;
            }
            _ => {
                let symbol = SYMBOLS
                    .iter()
                    .find(|s| text[i..].starts_with(**s))
                    .ok_or_else(|| {
                        CqlError::Syntax(format!("unexpected character {:?}", c as char))
                    })?;
                tokens.push(Token::Symbol(symbol));
                i += symbol.len();
            }
        }
    }
    Ok(tokens)
}

fn word_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    i
}

/// A UUID literal (`8-4-4-4-12` hex digits) at the start of `text`.
fn uuid_at(text: &str) -> Option<[u8; 16]> {
    let candidate = text.get(..36)?;
    let dashes = [8, 13, 18, 23];
    for (k, b) in candidate.bytes().enumerate() {
        let ok = if dashes.contains(&k) {
            b == b'-'
        } else {
            b.is_ascii_hexdigit()
        };
        if !ok {
            return None;
        }
    }
    if text
        .as_bytes()
        .get(36)
        .is_some_and(u8::is_ascii_alphanumeric)
    {
        return None;
    }
    let hex: String = candidate.chars().filter(|c| *c != '-').collect();
    let mut out = [0_u8; 16];
    for (k, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).ok()?;
    }
    Some(out)
}
