//! INSERT, UPDATE and DELETE.

use crate::cql::{Operand, Operator, Relation, Term, Using};
use crate::data::{partition_bytes, Partition};
use crate::error::{unsupported, CqlError};
use crate::schema::{Kind, TableSchema};
use crate::store::Store;

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
    crate::data::upsert(table, &row, timestamp, Some(ttl), true, now);
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
    crate::data::upsert(table, &row, timestamp, Some(ttl), false, now);
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
        crate::data::upsert(table, &row, timestamp, None, false, now);
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
        Clustering::Prefix(ck) => crate::data::delete_prefix(table, pk, &ck, timestamp),
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
