//! SELECT: rows of the selected partitions and slice, in order, paged.

use std::ops::Bound;

use crate::cql::{Select, Selector};
use crate::data::{partition_bytes, Row};
use crate::error::{unsupported, CqlError};
use crate::schema::{Kind, TableSchema};
use crate::store::Store;
use crate::types::CqlType;

use super::restrict::{restrict, Restriction};
use super::{int_term, Execution, Rows};

/// What a SELECT outputs per row.
pub(super) enum Output {
    Column(usize),
    WriteTime(usize),
    Ttl(usize),
}

pub(super) fn outputs(
    schema: &TableSchema,
    select: &Select,
) -> Result<(Vec<Output>, bool), CqlError> {
    let Some(selectors) = &select.selectors else {
        return Ok((
            (0..schema.columns.len()).map(Output::Column).collect(),
            false,
        ));
    };
    if selectors.contains(&Selector::Count) {
        if selectors.len() > 1 {
            return Err(unsupported("count(*) beside other selectors"));
        }
        return Ok((Vec::new(), true));
    }
    let mut out = Vec::new();
    for selector in selectors {
        out.push(match selector {
            Selector::Column(name) => Output::Column(schema.require(name)?),
            Selector::WriteTime(name) | Selector::Ttl(name) => {
                let index = schema.require(name)?;
                if schema.columns[index].kind != Kind::Regular {
                    return Err(CqlError::Invalid(format!(
                        "Cannot use selection function writetime/ttl on PRIMARY KEY part {name}"
                    )));
                }
                if matches!(selector, Selector::Ttl(_)) {
                    Output::Ttl(index)
                } else {
                    Output::WriteTime(index)
                }
            }
            Selector::Count => unreachable!(),
        });
    }
    Ok((out, false))
}

pub(super) fn output_columns(
    schema: &TableSchema,
    outputs: &[Output],
    count: bool,
) -> Vec<(String, CqlType)> {
    if count {
        return vec![("count".into(), CqlType::Bigint)];
    }
    outputs
        .iter()
        .map(|o| match o {
            Output::Column(i) => (
                schema.columns[*i].name.clone(),
                schema.columns[*i].ty.clone(),
            ),
            Output::WriteTime(i) => (
                format!("writetime({})", schema.columns[*i].name),
                CqlType::Bigint,
            ),
            Output::Ttl(i) => (format!("ttl({})", schema.columns[*i].name), CqlType::Int),
        })
        .collect()
}

/// Whether ORDER BY reverses the table's clustering order.
fn reversed(
    schema: &TableSchema,
    select: &Select,
    restriction: &Restriction,
) -> Result<bool, CqlError> {
    if select.order_by.is_empty() {
        return Ok(false);
    }
    if restriction.scan {
        return Err(CqlError::Invalid(
            "ORDER BY is only supported when the partition key is restricted by an EQ or an IN"
                .into(),
        ));
    }
    let mut reverse = None;
    for (k, (name, descending)) in select.order_by.iter().enumerate() {
        let index = schema.require(name)?;
        let column = &schema.columns[index];
        if column.kind != Kind::Clustering || column.position != k {
            return Err(CqlError::Invalid(
                "Order by currently only supports the ordering of columns following their declared order in the PRIMARY KEY".into(),
            ));
        }
        let this = *descending != column.descending;
        if reverse.is_some_and(|r| r != this) {
            return Err(CqlError::Invalid("Unsupported order by relation".into()));
        }
        reverse = Some(this);
    }
    Ok(reverse.unwrap_or(false))
}

/// Where a page ended: the partition, the last row's encoded clustering key, rows so far.
struct PagingState {
    partition: Vec<u8>,
    row: Vec<u8>,
    returned: u64,
}

impl PagingState {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in [&self.partition, &self.row] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&self.returned.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, CqlError> {
        let bad = || CqlError::Protocol("invalid paging state".into());
        let mut rest = bytes;
        let mut take = |n: usize| -> Result<&[u8], CqlError> {
            if rest.len() < n {
                return Err(bad());
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let mut part = || -> Result<Vec<u8>, CqlError> {
            let len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?);
            Ok(take(usize::try_from(len).map_err(|_| bad())?)?.to_vec())
        };
        let partition = part()?;
        let row = part()?;
        let returned = u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad())?);
        Ok(PagingState {
            partition,
            row,
            returned,
        })
    }
}

pub(super) fn select(
    store: &Store,
    keyspace: &str,
    select: &Select,
    exec: &Execution,
) -> Result<Rows, CqlError> {
    let table = store.table(keyspace, &select.table.name)?;
    let schema = &table.schema;
    let restriction = restrict(schema, &select.relations, exec)?;
    let (outputs, count) = outputs(schema, select)?;
    let reverse = reversed(schema, select, &restriction)?;
    let limit = match &select.limit {
        Some(term) => match int_term(term, exec, "limit")? {
            Some(n) if n <= 0 => {
                return Err(CqlError::Invalid("LIMIT must be strictly positive".into()))
            }
            Some(n) => u64::try_from(n).unwrap_or(u64::MAX),
            None => u64::MAX,
        },
        None => u64::MAX,
    };
    let state = exec.paging_state.map(PagingState::decode).transpose()?;
    let page_size = if count { None } else { exec.page_size };
    let now = store.now_seconds();
    let slice = restriction.clustering.slice(schema);

    let keys: Vec<Vec<u8>> = if restriction.scan {
        let from = state.as_ref().map(|s| s.partition.clone());
        table
            .partitions
            .range::<Vec<u8>, _>((
                from.map_or(Bound::Unbounded, Bound::Included),
                Bound::Unbounded,
            ))
            .map(|(k, _)| k.clone())
            .collect()
    } else {
        let keys: Vec<Vec<u8>> = restriction
            .partitions
            .iter()
            .map(|pk| partition_bytes(pk))
            .collect();
        match &state {
            Some(s) => keys
                .iter()
                .skip_while(|k| **k != s.partition)
                .cloned()
                .collect(),
            None => keys,
        }
    };

    let mut rows = Vec::new();
    let mut returned = state.as_ref().map_or(0, |s| s.returned);
    let mut counted: i64 = 0;
    let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut more = false;
    'partitions: for key in keys {
        let Some(partition) = table.partitions.get(&key) else {
            continue;
        };
        let slice = match &state {
            Some(s) if s.partition == key && !s.row.is_empty() => {
                slice.resume_after(&s.row, reverse)
            }
            Some(s) if s.partition == key => continue,
            _ => slice.clone(),
        };
        let Some(range) = slice.range() else {
            continue;
        };
        let iter: Box<dyn Iterator<Item = (&Vec<u8>, &Row)>> = if reverse {
            Box::new(partition.rows.range(range).rev())
        } else {
            Box::new(partition.rows.range(range))
        };
        for (encoded, row) in iter {
            if !slice.contains(encoded) {
                continue;
            }
            let Some(live) = partition.live_row(encoded, row, now) else {
                continue;
            };
            if returned >= limit {
                break 'partitions;
            }
            if page_size.is_some_and(|size| rows.len() >= size) {
                more = true;
                break 'partitions;
            }
            returned += 1;
            if count {
                counted += 1;
                continue;
            }
            let values = outputs
                .iter()
                .map(|output| match output {
                    Output::Column(i) => {
                        let column = &schema.columns[*i];
                        match column.kind {
                            Kind::PartitionKey => Some(partition.key[column.position].clone()),
                            Kind::Clustering => Some(row.key[column.position].clone()),
                            Kind::Regular => live.cells.get(i).and_then(|c| c.value.clone()),
                        }
                    }
                    Output::WriteTime(i) => live
                        .cells
                        .get(i)
                        .map(|c| c.timestamp.to_be_bytes().to_vec()),
                    Output::Ttl(i) => live.cells.get(i).and_then(|c| c.expires_at).map(|at| {
                        i32::try_from(at - now)
                            .unwrap_or(i32::MAX)
                            .to_be_bytes()
                            .to_vec()
                    }),
                })
                .collect();
            rows.push(values);
            last = Some((key.clone(), encoded.clone()));
        }
    }
    if count {
        rows.push(vec![Some(counted.to_be_bytes().to_vec())]);
    }
    let paging_state = match (more, last) {
        (true, Some((partition, row))) => Some(
            PagingState {
                partition,
                row,
                returned,
            }
            .encode(),
        ),
        _ => None,
    };
    Ok(Rows {
        keyspace: keyspace.to_string(),
        table: select.table.name.clone(),
        columns: output_columns(schema, &outputs, count),
        rows,
        paging_state,
    })
}
