//! Result bodies: bound values in, rows metadata, schema changes and statement ids out.

use std::hash::{Hash, Hasher};

use cassandra_protocol::frame::events::{
    SchemaChange, SchemaChangeOptions, SchemaChangeTarget, SchemaChangeType,
};
use cassandra_protocol::frame::message_result::{
    ColSpec, RowsMetadata, RowsMetadataFlags, TableSpec,
};
use cassandra_protocol::types::CBytes;

use super::request::Values;
use crate::cql::Parsed;
use crate::data::Write;
use crate::error::CqlError;
use crate::store::{ChangeType, SchemaChanged};
use crate::types::CqlType;
/// The values of a request, one per marker, named ones put in marker order.
pub(super) fn bound_values(parsed: &Parsed, values: &Values) -> Result<Vec<Write>, CqlError> {
    match values {
        Values::None => Ok(Vec::new()),
        Values::Positional(values) => Ok(values.clone()),
        Values::Named(named) => parsed
            .markers
            .iter()
            .map(|name| {
                let name = name.as_deref().unwrap_or_default();
                named
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        CqlError::Invalid(format!("no value for the named marker {name}"))
                    })
            })
            .collect(),
    }
}

pub(super) fn col_spec(name: &str, ty: &CqlType) -> ColSpec {
    ColSpec {
        table_spec: None,
        name: name.to_string(),
        col_type: ty.col_type(),
    }
}

pub(super) fn rows_metadata(
    spec: Option<TableSpec>,
    columns: &[(String, CqlType)],
    paging_state: Option<CBytes>,
) -> RowsMetadata {
    let mut flags = RowsMetadataFlags::empty();
    if paging_state.is_some() {
        flags |= RowsMetadataFlags::HAS_MORE_PAGES;
    }
    let global = if columns.is_empty() {
        flags |= RowsMetadataFlags::NO_METADATA;
        None
    } else {
        flags |= RowsMetadataFlags::GLOBAL_TABLE_SPACE;
        spec.or_else(|| {
            Some(TableSpec {
                ks_name: String::new(),
                table_name: String::new(),
            })
        })
    };
    RowsMetadata {
        flags,
        columns_count: i32::try_from(columns.len()).unwrap_or(i32::MAX),
        paging_state,
        new_metadata_id: None,
        global_table_spec: global,
        col_specs: columns
            .iter()
            .map(|(name, ty)| col_spec(name, ty))
            .collect(),
    }
}

pub(super) fn schema_change(change: &SchemaChanged) -> SchemaChange {
    let change_type = match change.change {
        ChangeType::Created => SchemaChangeType::Created,
        ChangeType::Updated => SchemaChangeType::Updated,
        ChangeType::Dropped => SchemaChangeType::Dropped,
    };
    match &change.table {
        Some(table) => SchemaChange {
            change_type,
            target: SchemaChangeTarget::Table,
            options: SchemaChangeOptions::TableType(change.keyspace.clone(), table.clone()),
        },
        None => SchemaChange {
            change_type,
            target: SchemaChangeTarget::Keyspace,
            options: SchemaChangeOptions::Keyspace(change.keyspace.clone()),
        },
    }
}

/// A prepared statement's id: a digest of its text and keyspace (as Cassandra's MD5 id, the
/// same statement gets the same id on every connection).
pub(super) fn statement_id(query: &str, keyspace: Option<&str>) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    for seed in [0_u8, 1] {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (seed, query, keyspace).hash(&mut hasher);
        id.extend_from_slice(&hasher.finish().to_be_bytes());
    }
    id
}
