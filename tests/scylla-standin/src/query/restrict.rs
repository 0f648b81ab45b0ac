//! A WHERE clause read into the partitions and the clustering slice it selects.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::cql::{InValues, Operand, Operator, Relation, Term};
use crate::data::{clustering_bytes, Slice};
use crate::error::{unsupported, CqlError};
use crate::schema::{Kind, TableSchema};
use crate::types::{collection_items, CqlType};

use super::{required, Execution, Write, MAX_IN_VALUES};

/// What a WHERE clause selects.
pub(super) struct Restriction {
    /// The partitions named, each as its key's values; empty with `scan` set means all.
    pub(super) partitions: Vec<Vec<Vec<u8>>>,
    /// No partition key restriction: every partition.
    pub(super) scan: bool,
    /// Which rows of each partition.
    pub(super) clustering: Clustering,
}

pub(super) enum Clustering {
    /// Equalities on a prefix of the clustering columns (maybe empty).
    Prefix(Vec<Vec<u8>>),
    /// A range (after an equality prefix), in encoded order.
    Range(Slice),
}

impl Clustering {
    pub(super) fn slice(&self, schema: &TableSchema) -> Slice {
        match self {
            Clustering::Prefix(values) if values.is_empty() => Slice::all(),
            Clustering::Prefix(values) => Slice::prefix(clustering_bytes(schema, values)),
            Clustering::Range(slice) => slice.clone(),
        }
    }
}

pub(super) fn restrict(
    schema: &TableSchema,
    relations: &[Relation],
    exec: &Execution,
) -> Result<Restriction, CqlError> {
    let mut pk_values: Vec<Option<Vec<Vec<u8>>>> = vec![None; schema.partition_key.len()];
    let mut ck_eq: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut ranges: Vec<&Relation> = Vec::new();
    for relation in relations {
        let indexes = relation
            .columns
            .iter()
            .map(|c| schema.require(c))
            .collect::<Result<Vec<_>, _>>()?;
        let first = &schema.columns[indexes[0]];
        match first.kind {
            Kind::Regular => {
                return Err(CqlError::Invalid(format!(
                    "Cannot execute this query as it might involve data filtering (restriction on regular column {}); the stand-in does not implement ALLOW FILTERING",
                    first.name
                )))
            }
            Kind::PartitionKey => {
                if indexes.len() > 1 || relation.operator != Operator::Eq {
                    return Err(CqlError::Invalid(format!(
                        "Only EQ and IN relations are supported on the partition key {} (unless you use the token() function)",
                        first.name
                    )));
                }
                let values = match &relation.operand {
                    Operand::Single(term) => vec![required(term, &first.ty, exec, &first.name)?],
                    Operand::In(InValues::Listed(terms)) => terms
                        .iter()
                        .map(|t| required(t, &first.ty, exec, &first.name))
                        .collect::<Result<_, _>>()?,
                    Operand::In(InValues::Bound(i)) => {
                        let list = CqlType::List(Box::new(first.ty.clone()));
                        let Write::Value(bytes) = required(&Term::Bind(*i), &list, exec, &first.name)
                            .map(Write::Value)?
                        else {
                            unreachable!()
                        };
                        collection_items(&bytes, 1)?
                            .into_iter()
                            .map(|item| item[0].to_vec())
                            .collect()
                    }
                    Operand::Tuple(_) => return Err(unsupported("tuples on the partition key")),
                };
                if pk_values[first.position].replace(values).is_some() {
                    return Err(CqlError::Invalid(format!(
                        "{} cannot be restricted by more than one relation",
                        first.name
                    )));
                }
            }
            Kind::Clustering => match (&relation.operand, relation.operator) {
                (Operand::Single(term), Operator::Eq) => {
                    ck_eq.insert(first.position, required(term, &first.ty, exec, &first.name)?);
                }
                (Operand::Tuple(terms), Operator::Eq) => {
                    for (index, term) in indexes.iter().zip(terms) {
                        let col = &schema.columns[*index];
                        ck_eq.insert(col.position, required(term, &col.ty, exec, &col.name)?);
                    }
                }
                (Operand::In(_), _) => return Err(unsupported("IN on clustering columns")),
                _ => ranges.push(relation),
            },
        }
    }
    let restricted = pk_values.iter().filter(|v| v.is_some()).count();
    let scan = restricted == 0;
    if !scan && restricted < pk_values.len() {
        let missing = schema
            .partition_key
            .iter()
            .zip(&pk_values)
            .filter(|(_, v)| v.is_none())
            .map(|(i, _)| schema.columns[*i].name.clone())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CqlError::Invalid(format!(
            "Cannot execute this query as it might involve data filtering: partition key parts {missing} must be restricted"
        )));
    }
    let mut partitions: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    if !scan {
        for values in pk_values.into_iter().flatten() {
            partitions = partitions
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut key = prefix.clone();
                        key.push(v.clone());
                        key
                    })
                })
                .collect();
            if partitions.len() > MAX_IN_VALUES {
                return Err(CqlError::Invalid(format!(
                    "IN selects more than {MAX_IN_VALUES} partitions"
                )));
            }
        }
        partitions.dedup();
    } else {
        partitions.clear();
        if !ck_eq.is_empty() || !ranges.is_empty() {
            return Err(CqlError::Invalid(
                "Cannot execute this query as it might involve data filtering: clustering columns are restricted but the partition key is not".into(),
            ));
        }
    }
    // Equalities must form a prefix of the clustering columns.
    let prefix_len = ck_eq.len();
    if ck_eq.keys().copied().ne(0..prefix_len) {
        return Err(CqlError::Invalid(
            "PRIMARY KEY column cannot be restricted as preceding column is not restricted".into(),
        ));
    }
    let prefix: Vec<Vec<u8>> = ck_eq.into_values().collect();
    if ranges.is_empty() {
        return Ok(Restriction {
            partitions,
            scan,
            clustering: Clustering::Prefix(prefix),
        });
    }
    let mut slice = if prefix.is_empty() {
        Slice::all()
    } else {
        Slice::prefix(clustering_bytes(schema, &prefix))
    };
    let mut range_columns: Option<Vec<usize>> = None;
    for relation in ranges {
        let indexes: Vec<usize> = relation
            .columns
            .iter()
            .map(|c| schema.require(c))
            .collect::<Result<_, _>>()?;
        let positions: Vec<usize> = indexes
            .iter()
            .map(|i| schema.columns[*i].position)
            .collect();
        if positions
            .iter()
            .copied()
            .ne(prefix_len..prefix_len + positions.len())
        {
            return Err(CqlError::Invalid(
                "a clustering range must follow the restricted prefix, in key order".into(),
            ));
        }
        if range_columns.as_ref().is_some_and(|r| r[0] != indexes[0]) {
            return Err(CqlError::Invalid(
                "only one clustering range is allowed".into(),
            ));
        }
        range_columns = Some(indexes.clone());
        let descending = schema.columns[indexes[0]].descending;
        if indexes
            .iter()
            .any(|i| schema.columns[*i].descending != descending)
        {
            return Err(unsupported(
                "tuple ranges over columns of mixed clustering order",
            ));
        }
        let terms: Vec<&Term> = match &relation.operand {
            Operand::Single(term) => vec![term],
            Operand::Tuple(terms) => terms.iter().collect(),
            Operand::In(_) => unreachable!("IN was rejected above"),
        };
        let mut values = prefix.clone();
        for (index, term) in indexes.iter().zip(terms) {
            let col = &schema.columns[*index];
            values.push(required(term, &col.ty, exec, &col.name)?);
        }
        let bound = clustering_bytes(schema, &values);
        // In encoded order a descending column runs backwards: `>` bounds the end.
        let (lower, inclusive) = match relation.operator {
            Operator::Gt => (true, false),
            Operator::Ge => (true, true),
            Operator::Lt => (false, false),
            Operator::Le => (false, true),
            Operator::Eq => unreachable!("equalities were taken above"),
        };
        let bound = if inclusive {
            Bound::Included(bound)
        } else {
            Bound::Excluded(bound)
        };
        if lower != descending {
            slice.start = bound;
        } else {
            slice.end = bound;
        }
    }
    Ok(Restriction {
        partitions,
        scan,
        clustering: Clustering::Range(slice),
    })
}
