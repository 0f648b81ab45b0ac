//! CQL data types: their names in DDL, their wire form in result metadata, how a literal of
//! the query text becomes a value's bytes, and how two values of a clustering column compare.
//!
//! Values are kept in their serialized form (`native_protocol_v4.spec` section 6): what a
//! driver binds is stored as is, once it is checked to be a well-formed value of the column's
//! type, and rows are answered with the same bytes.

use std::cmp::Ordering;

use cassandra_protocol::frame::message_result::{ColType, ColTypeOption, ColTypeOptionValue};

use crate::cql::Literal;
use crate::error::CqlError;

/// A column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CqlType {
    /// `ascii`
    Ascii,
    /// `text` / `varchar`
    Text,
    /// `bigint` (8 bytes, signed)
    Bigint,
    /// `int` (4 bytes, signed)
    Int,
    /// `smallint`
    Smallint,
    /// `tinyint`
    Tinyint,
    /// `boolean`
    Boolean,
    /// `timestamp`: milliseconds since the epoch, 8 bytes
    Timestamp,
    /// `blob`
    Blob,
    /// `uuid`
    Uuid,
    /// `timeuuid`
    Timeuuid,
    /// `inet`: 4 or 16 bytes
    Inet,
    /// `double`
    Double,
    /// `float`
    Float,
    /// `list<T>`
    List(Box<CqlType>),
    /// `set<T>`
    Set(Box<CqlType>),
    /// `map<K, V>`
    Map(Box<CqlType>, Box<CqlType>),
}

impl CqlType {
    /// The type a DDL names (`frozen<…>` is accepted and changes nothing here: collections are
    /// always written whole).
    pub fn parse(name: &str) -> Result<Self, CqlError> {
        let name = name.trim().to_ascii_lowercase();
        if let Some(inner) = generic(&name, "frozen") {
            return Self::parse(inner);
        }
        if let Some(inner) = generic(&name, "list") {
            return Ok(CqlType::List(Box::new(Self::parse(inner)?)));
        }
        if let Some(inner) = generic(&name, "set") {
            return Ok(CqlType::Set(Box::new(Self::parse(inner)?)));
        }
        if let Some(inner) = generic(&name, "map") {
            let (key, value) = split_top_level(inner).ok_or_else(|| {
                CqlError::Invalid(format!("map type needs two parameters: {name}"))
            })?;
            return Ok(CqlType::Map(
                Box::new(Self::parse(key)?),
                Box::new(Self::parse(value)?),
            ));
        }
        Ok(match name.as_str() {
            "ascii" => CqlType::Ascii,
            "text" | "varchar" => CqlType::Text,
            "bigint" | "counter" => CqlType::Bigint,
            "int" => CqlType::Int,
            "smallint" => CqlType::Smallint,
            "tinyint" => CqlType::Tinyint,
            "boolean" => CqlType::Boolean,
            "timestamp" => CqlType::Timestamp,
            "blob" => CqlType::Blob,
            "uuid" => CqlType::Uuid,
            "timeuuid" => CqlType::Timeuuid,
            "inet" => CqlType::Inet,
            "double" => CqlType::Double,
            "float" => CqlType::Float,
            other => return Err(CqlError::Invalid(format!("unsupported type: {other}"))),
        })
    }

    /// The name `system_schema.columns` shows.
    pub fn cql_name(&self) -> String {
        match self {
            CqlType::Ascii => "ascii".into(),
            CqlType::Text => "text".into(),
            CqlType::Bigint => "bigint".into(),
            CqlType::Int => "int".into(),
            CqlType::Smallint => "smallint".into(),
            CqlType::Tinyint => "tinyint".into(),
            CqlType::Boolean => "boolean".into(),
            CqlType::Timestamp => "timestamp".into(),
            CqlType::Blob => "blob".into(),
            CqlType::Uuid => "uuid".into(),
            CqlType::Timeuuid => "timeuuid".into(),
            CqlType::Inet => "inet".into(),
            CqlType::Double => "double".into(),
            CqlType::Float => "float".into(),
            CqlType::List(t) => format!("list<{}>", t.cql_name()),
            CqlType::Set(t) => format!("set<{}>", t.cql_name()),
            CqlType::Map(k, v) => format!("map<{}, {}>", k.cql_name(), v.cql_name()),
        }
    }

    /// The `[option]` of result and prepared metadata (spec section 4.2.5.2).
    pub fn col_type(&self) -> ColTypeOption {
        let simple = |id| ColTypeOption { id, value: None };
        match self {
            CqlType::Ascii => simple(ColType::Ascii),
            CqlType::Text => simple(ColType::Varchar),
            CqlType::Bigint => simple(ColType::Bigint),
            CqlType::Int => simple(ColType::Int),
            CqlType::Smallint => simple(ColType::Smallint),
            CqlType::Tinyint => simple(ColType::Tinyint),
            CqlType::Boolean => simple(ColType::Boolean),
            CqlType::Timestamp => simple(ColType::Timestamp),
            CqlType::Blob => simple(ColType::Blob),
            CqlType::Uuid => simple(ColType::Uuid),
            CqlType::Timeuuid => simple(ColType::Timeuuid),
            CqlType::Inet => simple(ColType::Inet),
            CqlType::Double => simple(ColType::Double),
            CqlType::Float => simple(ColType::Float),
            CqlType::List(t) => ColTypeOption {
                id: ColType::List,
                value: Some(ColTypeOptionValue::CList(Box::new(t.col_type()))),
            },
            CqlType::Set(t) => ColTypeOption {
                id: ColType::Set,
                value: Some(ColTypeOptionValue::CSet(Box::new(t.col_type()))),
            },
            CqlType::Map(k, v) => ColTypeOption {
                id: ColType::Map,
                value: Some(ColTypeOptionValue::CMap(
                    Box::new(k.col_type()),
                    Box::new(v.col_type()),
                )),
            },
        }
    }

    /// Checks that `bytes` are a well-formed value of this type (spec section 6).
    pub fn validate(&self, bytes: &[u8]) -> Result<(), CqlError> {
        let fixed = |n: usize| {
            if bytes.len() == n {
                Ok(())
            } else {
                Err(CqlError::Invalid(format!(
                    "expected {n} bytes for a {} value, got {}",
                    self.cql_name(),
                    bytes.len()
                )))
            }
        };
        match self {
            CqlType::Bigint | CqlType::Timestamp | CqlType::Double => fixed(8),
            CqlType::Int | CqlType::Float => fixed(4),
            CqlType::Smallint => fixed(2),
            CqlType::Tinyint | CqlType::Boolean => fixed(1),
            CqlType::Uuid | CqlType::Timeuuid => fixed(16),
            CqlType::Inet if bytes.len() == 4 || bytes.len() == 16 => Ok(()),
            CqlType::Inet => fixed(4),
            CqlType::Text => std::str::from_utf8(bytes)
                .map(drop)
                .map_err(|_| CqlError::Invalid("text value is not valid UTF-8".into())),
            CqlType::Ascii if bytes.is_ascii() => Ok(()),
            CqlType::Ascii => Err(CqlError::Invalid("ascii value has non-ASCII bytes".into())),
            CqlType::Blob => Ok(()),
            CqlType::List(t) | CqlType::Set(t) => {
                for item in collection_items(bytes, 1)? {
                    t.validate(item[0])?;
                }
                Ok(())
            }
            CqlType::Map(k, v) => {
                for pair in collection_items(bytes, 2)? {
                    k.validate(pair[0])?;
                    v.validate(pair[1])?;
                }
                Ok(())
            }
        }
    }

    /// The bytes of a literal written in the query text, as a value of this type.
    pub fn encode_literal(&self, literal: &Literal) -> Result<Vec<u8>, CqlError> {
        let mismatch = || {
            CqlError::Invalid(format!(
                "invalid literal {literal:?} for a {} value",
                self.cql_name()
            ))
        };
        let int = |bits: u32| -> Result<i64, CqlError> {
            let Literal::Integer(n) = literal else {
                return Err(mismatch());
            };
            let n = i64::try_from(*n).map_err(|_| mismatch())?;
            let (min, max) = (-(1_i128 << (bits - 1)), (1_i128 << (bits - 1)) - 1);
            if i128::from(n) < min || i128::from(n) > max {
                return Err(CqlError::Invalid(format!(
                    "{n} is out of range for a {}",
                    self.cql_name()
                )));
            }
            Ok(n)
        };
        Ok(match self {
            CqlType::Bigint => int(64)?.to_be_bytes().to_vec(),
            CqlType::Timestamp => match literal {
                Literal::Integer(_) => int(64)?.to_be_bytes().to_vec(),
                _ => return Err(mismatch()),
            },
            CqlType::Int => i32::try_from(int(32)?)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .to_vec(),
            CqlType::Smallint => i16::try_from(int(16)?)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .to_vec(),
            CqlType::Tinyint => i8::try_from(int(8)?)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .to_vec(),
            CqlType::Boolean => match literal {
                Literal::Boolean(b) => vec![u8::from(*b)],
                _ => return Err(mismatch()),
            },
            CqlType::Text | CqlType::Ascii => match literal {
                Literal::String(s) => {
                    let bytes = s.as_bytes().to_vec();
                    self.validate(&bytes)?;
                    bytes
                }
                _ => return Err(mismatch()),
            },
            CqlType::Blob => match literal {
                Literal::Blob(b) => b.clone(),
                _ => return Err(mismatch()),
            },
            CqlType::Uuid | CqlType::Timeuuid => match literal {
                Literal::Uuid(u) => u.to_vec(),
                _ => return Err(mismatch()),
            },
            CqlType::Inet => match literal {
                Literal::String(s) => match s.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(a)) => a.octets().to_vec(),
                    Ok(std::net::IpAddr::V6(a)) => a.octets().to_vec(),
                    Err(_) => return Err(mismatch()),
                },
                _ => return Err(mismatch()),
            },
            CqlType::Double => match literal {
                #[allow(clippy::cast_precision_loss)]
                Literal::Integer(n) => (*n as f64).to_be_bytes().to_vec(),
                Literal::Float(f) => f.to_be_bytes().to_vec(),
                _ => return Err(mismatch()),
            },
            CqlType::Float => match literal {
                #[allow(clippy::cast_precision_loss)]
                Literal::Integer(n) => (*n as f32).to_be_bytes().to_vec(),
                #[allow(clippy::cast_possible_truncation)]
                Literal::Float(f) => (*f as f32).to_be_bytes().to_vec(),
                _ => return Err(mismatch()),
            },
            CqlType::List(t) | CqlType::Set(t) => match literal {
                Literal::Collection(items) => {
                    let mut encoded = items
                        .iter()
                        .map(|item| t.encode_literal(item))
                        .collect::<Result<Vec<_>, _>>()?;
                    if matches!(self, CqlType::Set(_)) {
                        encoded.sort_by(|a, b| t.compare(a, b));
                        encoded.dedup();
                    }
                    encode_collection(encoded.iter().map(|e| vec![e.as_slice()]))
                }
                _ => return Err(mismatch()),
            },
            CqlType::Map(k, v) => match literal {
                Literal::Map(pairs) => {
                    let mut encoded = pairs
                        .iter()
                        .map(|(key, value)| Ok((k.encode_literal(key)?, v.encode_literal(value)?)))
                        .collect::<Result<Vec<_>, CqlError>>()?;
                    encoded.sort_by(|a, b| k.compare(&a.0, &b.0));
                    encoded.dedup_by(|a, b| a.0 == b.0);
                    encode_collection(
                        encoded
                            .iter()
                            .map(|(key, value)| vec![key.as_slice(), value.as_slice()]),
                    )
                }
                _ => return Err(mismatch()),
            },
        })
    }

    /// How two values of this type order as clustering keys (Cassandra's comparators: signed
    /// numbers by value, text and blobs by their bytes, booleans false first). UUIDs order by
    /// their bytes here; Cassandra orders time UUIDs by time first, which no table of the
    /// suite depends on.
    pub fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        fn signed<const N: usize>(a: &[u8], b: &[u8]) -> Option<Ordering> {
            let a: [u8; N] = a.try_into().ok()?;
            let b: [u8; N] = b.try_into().ok()?;
            // Big-endian two's complement: flipping the sign bit makes the bytes compare as
            // the numbers do.
            let (mut a, mut b) = (a, b);
            a[0] ^= 0x80;
            b[0] ^= 0x80;
            Some(a.cmp(&b))
        }
        let ordering = match self {
            CqlType::Bigint | CqlType::Timestamp => signed::<8>(a, b),
            CqlType::Int => signed::<4>(a, b),
            CqlType::Smallint => signed::<2>(a, b),
            CqlType::Tinyint => signed::<1>(a, b),
            CqlType::Double => f64_of(a).zip(f64_of(b)).map(|(x, y)| x.total_cmp(&y)),
            CqlType::Float => f32_of(a).zip(f32_of(b)).map(|(x, y)| x.total_cmp(&y)),
            _ => None,
        };
        ordering.unwrap_or_else(|| a.cmp(b))
    }
}

fn f64_of(bytes: &[u8]) -> Option<f64> {
    Some(f64::from_be_bytes(bytes.try_into().ok()?))
}

fn f32_of(bytes: &[u8]) -> Option<f32> {
    Some(f32::from_be_bytes(bytes.try_into().ok()?))
}

/// `inner` of `name<inner>`.
fn generic<'a>(name: &'a str, outer: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(outer)?.trim_start();
    rest.strip_prefix('<')?.strip_suffix('>')
}

/// Splits `a, b` at its one top-level comma.
fn split_top_level(inner: &str) -> Option<(&str, &str)> {
    let mut depth = 0_i32;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => return Some((&inner[..i], &inner[i + 1..])),
            _ => {}
        }
    }
    None
}

/// A collection's serialized form (spec sections 6.4, 6.6, 6.10): an `[int]` count, then each
/// element as `[bytes]`; maps alternate key and value.
pub fn encode_collection<'a>(items: impl Iterator<Item = Vec<&'a [u8]>>) -> Vec<u8> {
    let items: Vec<Vec<&[u8]>> = items.collect();
    let mut out = Vec::new();
    out.extend_from_slice(&i32::try_from(items.len()).unwrap_or(i32::MAX).to_be_bytes());
    for parts in items {
        for part in parts {
            out.extend_from_slice(&i32::try_from(part.len()).unwrap_or(i32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The elements of a serialized collection, `arity` values per element (1 for lists and sets,
/// 2 for maps).
pub fn collection_items(bytes: &[u8], arity: usize) -> Result<Vec<Vec<&[u8]>>, CqlError> {
    let malformed = || CqlError::Invalid("malformed collection value".into());
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], CqlError> {
        if rest.len() < n {
            return Err(malformed());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = i32::from_be_bytes(take(4)?.try_into().map_err(|_| malformed())?);
    let count = usize::try_from(count).map_err(|_| malformed())?;
    let mut items = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut parts = Vec::with_capacity(arity);
        for _ in 0..arity {
            let len = i32::from_be_bytes(take(4)?.try_into().map_err(|_| malformed())?);
            let len = usize::try_from(len).map_err(|_| malformed())?;
            parts.push(take(len)?);
        }
        items.push(parts);
    }
    if !rest.is_empty() {
        return Err(malformed());
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for name in [
            "text",
            "bigint",
            "map<text, text>",
            "set<text>",
            "list<int>",
            "timestamp",
        ] {
            assert_eq!(CqlType::parse(name).unwrap().cql_name(), name);
        }
        assert_eq!(
            CqlType::parse("frozen<list<text>>").unwrap(),
            CqlType::List(Box::new(CqlType::Text))
        );
        assert!(CqlType::parse("duration").is_err());
    }

    #[test]
    fn signed_numbers_compare_by_value() {
        let t = CqlType::Bigint;
        let (minus, plus) = ((-5_i64).to_be_bytes(), 3_i64.to_be_bytes());
        assert_eq!(t.compare(&minus, &plus), Ordering::Less);
        assert_eq!(t.compare(&plus, &minus), Ordering::Greater);
    }

    #[test]
    fn values_are_checked_against_their_type() {
        assert!(CqlType::Bigint.validate(&[0; 4]).is_err());
        assert!(CqlType::Text.validate(&[0xff]).is_err());
        let set = CqlType::Set(Box::new(CqlType::Text));
        let bytes = set
            .encode_literal(&Literal::Collection(vec![
                Literal::String("b".into()),
                Literal::String("a".into()),
            ]))
            .unwrap();
        set.validate(&bytes).unwrap();
        assert!(set.validate(&bytes[..bytes.len() - 1]).is_err());
    }
}
