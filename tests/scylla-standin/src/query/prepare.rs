//! The metadata a PREPARE answers.

use crate::cql::{InValues, Operand, Operator, Parsed, Statement, Term};
use crate::error::{unsupported, CqlError};
use crate::schema::Kind;
use crate::store::Store;
use crate::types::CqlType;

use super::read::{output_columns, outputs};
use super::{keyspace_of, Execution, Prepared};

/// The metadata a PREPARE answers: each marker's column and type, the partition key's
/// markers, and a SELECT's result columns.
pub fn prepare(
    store: &Store,
    parsed: &Parsed,
    keyspace: Option<&str>,
) -> Result<Prepared, CqlError> {
    let exec = Execution {
        keyspace,
        ..Execution::default()
    };
    let mut markers: Vec<Option<(String, CqlType)>> = vec![None; parsed.markers.len()];
    let mut insert_pk: Vec<(usize, usize)> = Vec::new();
    let mut set = |term: &Term, name: &str, ty: CqlType| {
        if let Term::Bind(i) = term {
            markers[*i] = Some((name.to_string(), ty));
        }
    };
    let (table_name, relations, using, limit) = match &parsed.statement {
        Statement::Insert {
            table,
            columns,
            values,
            using,
        } => {
            let schema = &store
                .table(&keyspace_of(table, &exec)?, &table.name)?
                .schema;
            for (column, term) in columns.iter().zip(values) {
                let col = &schema.columns[schema.require(column)?];
                set(term, &col.name, col.ty.clone());
                if let (Kind::PartitionKey, Term::Bind(i)) = (col.kind, term) {
                    insert_pk.push((col.position, *i));
                }
            }
            (Some(table), &[][..], Some(using), None)
        }
        Statement::Update {
            table,
            using,
            assignments,
            relations,
        } => {
            let schema = &store
                .table(&keyspace_of(table, &exec)?, &table.name)?
                .schema;
            for (column, term) in assignments {
                let col = &schema.columns[schema.require(column)?];
                set(term, &col.name, col.ty.clone());
            }
            (Some(table), relations.as_slice(), Some(using), None)
        }
        Statement::Delete {
            table,
            using,
            relations,
            ..
        } => (Some(table), relations.as_slice(), Some(using), None),
        Statement::Select(select) => (
            Some(&select.table),
            select.relations.as_slice(),
            None,
            select.limit.as_ref(),
        ),
        _ => (None, &[][..], None, None),
    };
    if let Some(using) = using {
        if let Some(term) = &using.ttl {
            set(term, "[ttl]", CqlType::Int);
        }
        if let Some(term) = &using.timestamp {
            set(term, "[timestamp]", CqlType::Bigint);
        }
    }
    if let Some(term) = limit {
        set(term, "[limit]", CqlType::Int);
    }
    let Some(table_name) = table_name else {
        if !parsed.markers.is_empty() {
            return Err(unsupported("bind markers in DDL"));
        }
        return Ok(Prepared {
            table: None,
            markers: Vec::new(),
            pk_indexes: Vec::new(),
            result: Vec::new(),
        });
    };
    let keyspace = keyspace_of(table_name, &exec)?;
    let schema = &store.table(&keyspace, &table_name.name)?.schema;
    let mut pk_markers: Vec<Option<i16>> = vec![None; schema.partition_key.len()];
    for (position, marker) in insert_pk {
        pk_markers[position] = i16::try_from(marker).ok();
    }
    for relation in relations {
        let indexes = relation
            .columns
            .iter()
            .map(|c| schema.require(c))
            .collect::<Result<Vec<_>, _>>()?;
        match &relation.operand {
            Operand::Single(term) => {
                let col = &schema.columns[indexes[0]];
                set(term, &col.name, col.ty.clone());
                if let (Kind::PartitionKey, Term::Bind(i), Operator::Eq) =
                    (col.kind, term, relation.operator)
                {
                    pk_markers[col.position] = i16::try_from(*i).ok();
                }
            }
            Operand::Tuple(terms) => {
                for (index, term) in indexes.iter().zip(terms) {
                    let col = &schema.columns[*index];
                    set(term, &col.name, col.ty.clone());
                }
            }
            Operand::In(InValues::Listed(terms)) => {
                let col = &schema.columns[indexes[0]];
                for term in terms {
                    set(term, &col.name, col.ty.clone());
                }
            }
            Operand::In(InValues::Bound(i)) => {
                let col = &schema.columns[indexes[0]];
                set(
                    &Term::Bind(*i),
                    &format!("in({})", col.name),
                    CqlType::List(Box::new(col.ty.clone())),
                );
            }
        }
    }
    let markers = markers
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.ok_or_else(|| CqlError::Invalid(format!("bind marker {i} has no type"))))
        .collect::<Result<Vec<_>, _>>()?;
    let pk_indexes = pk_markers
        .iter()
        .copied()
        .collect::<Option<Vec<i16>>>()
        .unwrap_or_default();
    let result = match &parsed.statement {
        Statement::Select(select) => {
            let (outputs, count) = outputs(schema, select)?;
            output_columns(schema, &outputs, count)
        }
        _ => Vec::new(),
    };
    Ok(Prepared {
        table: Some((keyspace, table_name.name.clone())),
        markers,
        pk_indexes,
        result,
    })
}
