//! INSERT, UPDATE and DELETE.

use crate::cql::{Operand, Operator, Relation, Term, Using};
use crate::data::{clustering_bytes, partition_bytes, Cell, Partition, Row, Slice};
use crate::error::{unsupported, CqlError};
use crate::schema::{Kind, TableSchema};
use crate::store::{Store, Table};

use super::restrict::{restrict, Clustering};
use super::{int_term, required, resolve, Execution, Write};

/// The most seconds a TTL may be (Cassandra's limit: 20 years).
const MAX_TTL: i64 = 630_720_000;

/// `USING` resolved: the write's timestamp and TTL (0 for none).
fn write_parameters(
    store: &mut Store,
    using: &Using,
    default_ttl: i32,
    exec: &Execution,
) -> Result<(i64, i32), CqlError> {
    let timestamp = match &using.timestamp {
        Some(term) => int_term(term, exec, "timestamp")?,
        None => None,
    }
    .or(exec.client_timestamp)
    .unwrap_or_else(|| store.next_timestamp());
    let ttl = match &using.ttl {
        Some(term) => match int_term(term, exec, "ttl")? {
            Some(ttl) if !(0..=MAX_TTL).contains(&ttl) => {
                return Err(CqlError::Invalid(format!(
                    "ttl is out of range: {ttl} (from 0 to {MAX_TTL} seconds)"
                )))
            }
            Some(ttl) => i32::try_from(ttl).unwrap_or(0),
            None => default_ttl,
        },
        None => default_ttl,
    };
    Ok((timestamp, ttl))
}

/// Writes one row: `row` has one entry per column (keys must be values). Sets the row marker
/// when `marker` (INSERT does, UPDATE does not).
pub fn upsert(
    table: &mut Table,
    row: &[Write],
    timestamp: i64,
    ttl: Option<i32>,
    marker: bool,
    now: i64,
) {
    let schema = &table.schema;
    let value = |index: usize| match &row[index] {
        Write::Value(v) => v.clone(),
        _ => Vec::new(),
    };
    let pk: Vec<Vec<u8>> = schema.partition_key.iter().map(|&i| value(i)).collect();
    let ck: Vec<Vec<u8>> = schema.clustering.iter().map(|&i| value(i)).collect();
    let encoded = clustering_bytes(schema, &ck);
    let ttl = ttl.filter(|t| *t > 0);
    let expires_at = ttl.map(|t| now + i64::from(t));
    let regular: Vec<(usize, Cell)> = schema
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == Kind::Regular)
        .filter_map(|(i, _)| match &row[i] {
            Write::Unset => None,
            Write::Null => Some((
                i,
                Cell {
                    value: None,
                    timestamp,
                    expires_at: None,
                    ttl: None,
                },
            )),
            Write::Value(v) => Some((
                i,
                Cell {
                    value: Some(v.clone()),
                    timestamp,
                    expires_at,
                    ttl,
                },
            )),
        })
        .collect();
    let partition = table
        .partitions
        .entry(partition_bytes(&pk))
        .or_insert_with(|| Partition {
            key: pk,
            ..Partition::default()
        });
    let target = partition.rows.entry(encoded).or_insert_with(|| Row {
        key: ck,
        ..Row::default()
    });
    if marker {
        let new = Cell {
            value: Some(Vec::new()),
            timestamp,
            expires_at,
            ttl,
        };
        target.marker = Some(match target.marker.take() {
            Some(old) => old.reconcile(new, now),
            None => new,
        });
    }
    for (index, cell) in regular {
        let merged = match target.cells.remove(&index) {
            Some(old) => old.reconcile(cell, now),
            None => cell,
        };
        target.cells.insert(index, merged);
    }
    table.writes_since_purge += 1;
    if table.writes_since_purge >= 256 {
        table.writes_since_purge = 0;
        for partition in table.partitions.values_mut() {
            partition.purge(now);
        }
    }
}

/// Deletes the rows under a partition and a clustering prefix (empty: the whole partition).
pub fn delete_prefix(table: &mut Table, pk: &[Vec<u8>], ck: &[Vec<u8>], timestamp: i64) {
    let full_row = ck.len() == table.schema.clustering.len();
    let encoded = clustering_bytes(&table.schema, ck);
    let partition = table
        .partitions
        .entry(partition_bytes(pk))
        .or_insert_with(|| Partition {
            key: pk.to_vec(),
            ..Partition::default()
        });
    if ck.is_empty() {
        partition.deleted_at = partition.deleted_at.max(Some(timestamp));
    } else if full_row {
        let row = partition.rows.entry(encoded).or_insert_with(|| Row {
            key: ck.to_vec(),
            ..Row::default()
        });
        row.deleted_at = row.deleted_at.max(Some(timestamp));
    } else {
        partition
            .range_tombstones
            .push((Slice::prefix(encoded), timestamp));
    }
}

pub(super) fn insert(
    store: &mut Store,
    keyspace: &str,
    name: &str,
    columns: &[String],
    values: &[Term],
    using: &Using,
    exec: &Execution,
) -> Result<(), CqlError> {
    let schema = store.table_for_write(keyspace, name)?.schema.clone();
    let mut row = vec![Write::Unset; schema.columns.len()];
    for (column, term) in columns.iter().zip(values) {
        let index = schema.require(column)?;
        if row[index] != Write::Unset {
            return Err(CqlError::Invalid(format!(
                "multiple definitions found for column {column}"
            )));
        }
        let col = &schema.columns[index];
        row[index] = if col.kind == Kind::Regular {
            resolve(term, &col.ty, exec)?
        } else {
            Write::Value(required(term, &col.ty, exec, &col.name)?)
        };
    }
    for &index in schema.partition_key.iter().chain(&schema.clustering) {
        if row[index] == Write::Unset {
            return Err(CqlError::Invalid(format!(
                "Some primary key parts are missing: {}",
                schema.columns[index].name
            )));
        }
    }
    let (timestamp, ttl) = write_parameters(store, using, schema.default_ttl, exec)?;
    let now = store.now_seconds();
    let table = store.table_for_write(keyspace, name)?;
    upsert(table, &row, timestamp, Some(ttl), true, now);
    Ok(())
}

/// The full primary key a write's WHERE names by equalities.
fn primary_key(
    schema: &TableSchema,
    relations: &[Relation],
    exec: &Execution,
) -> Result<Vec<Write>, CqlError> {
    let mut row = vec![Write::Unset; schema.columns.len()];
    for relation in relations {
        let (Operator::Eq, Operand::Single(term), [column]) = (
            relation.operator,
            &relation.operand,
            relation.columns.as_slice(),
        ) else {
            return Err(unsupported(
                "UPDATE with anything but column = value in WHERE",
            ));
        };
        let index = schema.require(column)?;
        let col = &schema.columns[index];
        if col.kind == Kind::Regular {
            return Err(CqlError::Invalid(format!(
                "Non PRIMARY KEY columns found in where clause: {column}"
            )));
        }
        row[index] = Write::Value(required(term, &col.ty, exec, column)?);
    }
    for &index in schema.partition_key.iter().chain(&schema.clustering) {
        if row[index] == Write::Unset {
            return Err(CqlError::Invalid(format!(
                "Some primary key parts are missing: {}",
                schema.columns[index].name
            )));
        }
    }
    Ok(row)
}

pub(super) fn update(
    store: &mut Store,
    keyspace: &str,
    name: &str,
    using: &Using,
    assignments: &[(String, Term)],
    relations: &[Relation],
    exec: &Execution,
) -> Result<(), CqlError> {
    let schema = store.table_for_write(keyspace, name)?.schema.clone();
    let mut row = primary_key(&schema, relations, exec)?;
    for (column, term) in assignments {
        let index = schema.require(column)?;
        let col = &schema.columns[index];
        if col.kind != Kind::Regular {
            return Err(CqlError::Invalid(format!(
                "PRIMARY KEY part {column} found in SET part"
            )));
        }
        row[index] = resolve(term, &col.ty, exec)?;
    }
    let (timestamp, ttl) = write_parameters(store, using, schema.default_ttl, exec)?;
    let now = store.now_seconds();
    let table = store.table_for_write(keyspace, name)?;
    upsert(table, &row, timestamp, Some(ttl), false, now);
    Ok(())
}

pub(super) fn delete(
    store: &mut Store,
    keyspace: &str,
    name: &str,
    columns: &[String],
    using: &Using,
    relations: &[Relation],
    exec: &Execution,
) -> Result<(), CqlError> {
    let schema = store.table_for_write(keyspace, name)?.schema.clone();
    let (timestamp, _) = write_parameters(store, using, 0, exec)?;
    if !columns.is_empty() {
        let mut row = primary_key(&schema, relations, exec)?;
        for column in columns {
            let index = schema.require(column)?;
            if schema.columns[index].kind != Kind::Regular {
                return Err(CqlError::Invalid(format!(
                    "Invalid identifier {column} for deletion (should not be a PRIMARY KEY part)"
                )));
            }
            row[index] = Write::Null;
        }
        let now = store.now_seconds();
        let table = store.table_for_write(keyspace, name)?;
        upsert(table, &row, timestamp, None, false, now);
        return Ok(());
    }
    let restriction = restrict(&schema, relations, exec)?;
    let [pk] = restriction.partitions.as_slice() else {
        return Err(unsupported(
            "DELETE of several partitions at once (IN or no partition key)",
        ));
    };
    let table = store.table_for_write(keyspace, name)?;
    match restriction.clustering {
        Clustering::Prefix(ck) => delete_prefix(table, pk, &ck, timestamp),
        Clustering::Range(slice) => {
            let encoded = partition_bytes(pk);
            let partition = table
                .partitions
                .entry(encoded)
                .or_insert_with(|| Partition {
                    key: pk.clone(),
                    ..Partition::default()
                });
            partition.range_tombstones.push((slice, timestamp));
        }
    }
    Ok(())
}
