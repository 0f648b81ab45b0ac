//! QUERY, EXECUTE and BATCH bodies (spec sections 4.1.4, 4.1.6, 4.1.7), decoded here rather
//! than by `cassandra-protocol`: its 3.3 decoder refuses a bound value of length 0, which the
//! spec allows (section 3, `[value]`: "n >= 0 bytes") and drivers send for every empty text.

use crate::data::Write;
use crate::error::CqlError;

/// The bound values of a request: by position, or by name.
#[derive(Debug, Clone, Default)]
pub enum Values {
    /// None bound.
    #[default]
    None,
    /// By position.
    Positional(Vec<Write>),
    /// By marker name.
    Named(Vec<(String, Write)>),
}

/// `<query_parameters>`, version 4.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// The values.
    pub values: Values,
    /// Rows per page.
    pub page_size: Option<i32>,
    /// Where to resume.
    pub paging_state: Option<Vec<u8>>,
    /// The client's timestamp for writes.
    pub timestamp: Option<i64>,
}

/// A QUERY: the text and its parameters.
#[derive(Debug)]
pub struct Query {
    /// The CQL text.
    pub text: String,
    /// Its parameters.
    pub params: Params,
}

/// An EXECUTE: the prepared id and the parameters.
#[derive(Debug)]
pub struct Execute {
    /// The prepared statement's id.
    pub id: Vec<u8>,
    /// Its parameters.
    pub params: Params,
}

/// One statement of a BATCH.
#[derive(Debug)]
pub enum BatchItem {
    /// A query text and its values.
    Text(String, Values),
    /// A prepared id and its values.
    Prepared(Vec<u8>, Values),
}

/// A BATCH.
#[derive(Debug)]
pub struct Batch {
    /// Its statements.
    pub items: Vec<BatchItem>,
    /// The client's timestamp.
    pub timestamp: Option<i64>,
}

struct Reader<'a> {
    rest: &'a [u8],
}

fn malformed(what: &str) -> CqlError {
    CqlError::Protocol(format!("malformed request body: {what}"))
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CqlError> {
        if self.rest.len() < n {
            return Err(malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, CqlError> {
        Ok(self.take(1, "byte")?[0])
    }

    fn short(&mut self) -> Result<u16, CqlError> {
        let b = self.take(2, "short")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn int(&mut self) -> Result<i32, CqlError> {
        let b = self.take(4, "int")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn long(&mut self) -> Result<i64, CqlError> {
        let b = self.take(8, "long")?;
        Ok(i64::from_be_bytes(
            b.try_into().map_err(|_| malformed("long"))?,
        ))
    }

    fn string(&mut self) -> Result<String, CqlError> {
        let n = usize::from(self.short()?);
        let bytes = self.take(n, "string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("string is not UTF-8"))
    }

    fn long_string(&mut self) -> Result<String, CqlError> {
        let n = usize::try_from(self.int()?).map_err(|_| malformed("long string length"))?;
        let bytes = self.take(n, "long string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("long string is not UTF-8"))
    }

    fn short_bytes(&mut self) -> Result<Vec<u8>, CqlError> {
        let n = usize::from(self.short()?);
        Ok(self.take(n, "short bytes")?.to_vec())
    }

    fn bytes(&mut self) -> Result<Option<Vec<u8>>, CqlError> {
        let n = self.int()?;
        if n < 0 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| malformed("bytes length"))?;
        Ok(Some(self.take(n, "bytes")?.to_vec()))
    }

    /// `[value]`: n >= 0 bytes, -1 null, -2 not set.
    fn value(&mut self) -> Result<Write, CqlError> {
        let n = self.int()?;
        match n {
            -1 => Ok(Write::Null),
            -2 => Ok(Write::Unset),
            n if n < 0 => Err(malformed("value length")),
            n => {
                let n = usize::try_from(n).map_err(|_| malformed("value length"))?;
                Ok(Write::Value(self.take(n, "value")?.to_vec()))
            }
        }
    }

    fn values(&mut self, named: bool) -> Result<Values, CqlError> {
        let n = self.short()?;
        if named {
            let mut values = Vec::with_capacity(usize::from(n).min(1024));
            for _ in 0..n {
                let name = self.string()?.to_ascii_lowercase();
                values.push((name, self.value()?));
            }
            Ok(Values::Named(values))
        } else {
            let mut values = Vec::with_capacity(usize::from(n).min(1024));
            for _ in 0..n {
                values.push(self.value()?);
            }
            Ok(Values::Positional(values))
        }
    }

    fn params(&mut self) -> Result<Params, CqlError> {
        let _consistency = self.short()?;
        let flags = self.byte()?;
        let mut params = Params::default();
        if flags & 0x01 != 0 {
            params.values = self.values(flags & 0x40 != 0)?;
        }
        if flags & 0x04 != 0 {
            params.page_size = Some(self.int()?);
        }
        if flags & 0x08 != 0 {
            params.paging_state = self.bytes()?;
        }
        if flags & 0x10 != 0 {
            self.short()?;
        }
        if flags & 0x20 != 0 {
            params.timestamp = Some(self.long()?);
        }
        Ok(params)
    }
}

/// Decodes a QUERY body.
pub fn query(body: &[u8]) -> Result<Query, CqlError> {
    let mut r = Reader { rest: body };
    Ok(Query {
        text: r.long_string()?,
        params: r.params()?,
    })
}

/// Decodes an EXECUTE body (version 4: no result metadata id).
pub fn execute(body: &[u8]) -> Result<Execute, CqlError> {
    let mut r = Reader { rest: body };
    Ok(Execute {
        id: r.short_bytes()?,
        params: r.params()?,
    })
}

/// Decodes a BATCH body.
pub fn batch(body: &[u8]) -> Result<Batch, CqlError> {
    let mut r = Reader { rest: body };
    let _kind = r.byte()?;
    let n = r.short()?;
    let mut items = Vec::with_capacity(usize::from(n).min(1024));
    for _ in 0..n {
        let item = match r.byte()? {
            0 => {
                let text = r.long_string()?;
                BatchItem::Text(text, r.values(false)?)
            }
            1 => {
                let id = r.short_bytes()?;
                BatchItem::Prepared(id, r.values(false)?)
            }
            other => return Err(malformed(&format!("batch statement kind {other}"))),
        };
        items.push(item);
    }
    let _consistency = r.short()?;
    let flags = r.byte()?;
    if flags & 0x40 != 0 {
        return Err(CqlError::Protocol(
            "named values in a BATCH are not supported".into(),
        ));
    }
    if flags & 0x10 != 0 {
        r.short()?;
    }
    let timestamp = if flags & 0x20 != 0 {
        Some(r.long()?)
    } else {
        None
    };
    Ok(Batch { items, timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_values() {
        // consistency ONE, flags VALUES, two values: "" and null.
        let mut body = Vec::new();
        body.extend_from_slice(&(8_i32).to_be_bytes());
        body.extend_from_slice(b"SELECT ?");
        body.extend_from_slice(&1_u16.to_be_bytes());
        body.push(0x01);
        body.extend_from_slice(&2_u16.to_be_bytes());
        body.extend_from_slice(&0_i32.to_be_bytes());
        body.extend_from_slice(&(-1_i32).to_be_bytes());
        let decoded = query(&body).unwrap();
        let Values::Positional(values) = decoded.params.values else {
            panic!("positional values");
        };
        assert_eq!(values, vec![Write::Value(Vec::new()), Write::Null]);
    }

    #[test]
    fn truncated_bodies_are_protocol_errors() {
        assert!(matches!(
            query(&[0, 0, 0, 9, b'x']),
            Err(CqlError::Protocol(_))
        ));
        assert!(matches!(execute(&[0, 4, 1]), Err(CqlError::Protocol(_))));
    }
}
