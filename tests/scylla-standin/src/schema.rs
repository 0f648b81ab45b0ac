//! Keyspaces and tables: what DDL creates, and the `system` / `system_schema` tables that
//! describe them to drivers.
//!
//! The system tables are ordinary tables of the store, written by the DDL that changes the
//! schema, so that a driver's metadata queries (`system_schema.columns`, `system.local`, …)
//! run through the same SELECT as anything else.

use std::collections::BTreeMap;

use crate::cql::{CreateTable, Literal};
use crate::error::CqlError;
use crate::types::CqlType;

/// A column's role in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Part of the partition key.
    PartitionKey,
    /// A clustering column.
    Clustering,
    /// Any other column.
    Regular,
}

impl Kind {
    /// The name `system_schema.columns.kind` shows.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PartitionKey => "partition_key",
            Kind::Clustering => "clustering",
            Kind::Regular => "regular",
        }
    }
}

/// A column of a table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: CqlType,
    /// Its role.
    pub kind: Kind,
    /// Its position inside the partition key or the clustering columns (0 for regular ones).
    pub position: usize,
    /// For a clustering column: stored newest-first (`CLUSTERING ORDER BY … DESC`).
    pub descending: bool,
}

/// A table's definition.
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// Its keyspace.
    pub keyspace: String,
    /// Its name.
    pub name: String,
    /// Columns, in the order `SELECT *` answers them: partition key, clustering, then the
    /// others by name (as Cassandra does).
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the partition key, in key order.
    pub partition_key: Vec<usize>,
    /// Indexes into `columns` of the clustering columns, in order.
    pub clustering: Vec<usize>,
    /// `default_time_to_live` in seconds, 0 for none.
    pub default_ttl: i32,
    /// The other `WITH` options as given (compaction, comment, …), as text.
    pub options: BTreeMap<String, String>,
}

impl TableSchema {
    /// The table a `CREATE TABLE` describes, checked.
    pub fn from_create(keyspace: &str, create: &CreateTable) -> Result<Self, CqlError> {
        let mut declared: Vec<(String, CqlType)> = Vec::new();
        for (name, ty) in &create.columns {
            if declared.iter().any(|(n, _)| n == name) {
                return Err(CqlError::Invalid(format!(
                    "column {name} is declared twice"
                )));
            }
            declared.push((name.clone(), CqlType::parse(ty)?));
        }
        let find = |name: &str| {
            declared
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| CqlError::Invalid(format!("unknown key column {name}")))
        };
        if create.partition_key.is_empty() {
            return Err(CqlError::Invalid("a table needs a PRIMARY KEY".into()));
        }
        let mut columns = Vec::new();
        for (position, name) in create.partition_key.iter().enumerate() {
            columns.push(Column {
                name: name.clone(),
                ty: find(name)?,
                kind: Kind::PartitionKey,
                position,
                descending: false,
            });
        }
        for (position, name) in create.clustering.iter().enumerate() {
            let descending = match create.clustering_order.get(position) {
                Some((ordered, descending)) if ordered == name => *descending,
                Some(_) => {
                    return Err(CqlError::Invalid(
                        "CLUSTERING ORDER BY must list the clustering columns in key order".into(),
                    ))
                }
                None => false,
            };
            columns.push(Column {
                name: name.clone(),
                ty: find(name)?,
                kind: Kind::Clustering,
                position,
                descending,
            });
        }
        if create.clustering_order.len() > create.clustering.len() {
            return Err(CqlError::Invalid(
                "CLUSTERING ORDER BY names a column that is not a clustering column".into(),
            ));
        }
        let mut regular: Vec<&(String, CqlType)> = declared
            .iter()
            .filter(|(n, _)| !columns.iter().any(|c| &c.name == n))
            .collect();
        regular.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ty) in regular {
            columns.push(Column {
                name: name.clone(),
                ty: ty.clone(),
                kind: Kind::Regular,
                position: 0,
                descending: false,
            });
        }
        let mut table = TableSchema {
            keyspace: keyspace.to_string(),
            name: create.table.name.clone(),
            partition_key: (0..create.partition_key.len()).collect(),
            clustering: (create.partition_key.len()
                ..create.partition_key.len() + create.clustering.len())
                .collect(),
            columns,
            default_ttl: 0,
            options: BTreeMap::new(),
        };
        table.apply_options(&create.options)?;
        Ok(table)
    }

    /// Applies `WITH` options (`default_time_to_live`, and any other kept as text).
    pub fn apply_options(&mut self, options: &[(String, Literal)]) -> Result<(), CqlError> {
        for (name, value) in options {
            if name == "default_time_to_live" {
                let Literal::Integer(ttl) = value else {
                    return Err(CqlError::Invalid(
                        "default_time_to_live must be a number of seconds".into(),
                    ));
                };
                self.default_ttl = i32::try_from(*ttl)
                    .ok()
                    .filter(|t| *t >= 0)
                    .ok_or_else(|| CqlError::Invalid("default_time_to_live out of range".into()))?;
            } else {
                self.options.insert(name.clone(), option_text(value));
            }
        }
        Ok(())
    }

    /// Adds regular columns (`ALTER TABLE … ADD`).
    pub fn add_columns(&mut self, added: &[(String, String)]) -> Result<(), CqlError> {
        for (name, ty) in added {
            if self.column(name).is_some() {
                return Err(CqlError::Invalid(format!(
                    "column {name} exists already in {}",
                    self.name
                )));
            }
            self.columns.push(Column {
                name: name.clone(),
                ty: CqlType::parse(ty)?,
                kind: Kind::Regular,
                position: 0,
                descending: false,
            });
        }
        let keys = self.partition_key.len() + self.clustering.len();
        self.columns[keys..].sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// The index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The index of a column, or the CQL error for an unknown one.
    pub fn require(&self, name: &str) -> Result<usize, CqlError> {
        self.column(name).ok_or_else(|| {
            CqlError::Invalid(format!(
                "undefined column name {name} in table {}.{}",
                self.keyspace, self.name
            ))
        })
    }
}

/// An option's value as `system_schema.tables` would show it.
fn option_text(value: &Literal) -> String {
    match value {
        Literal::String(s) => s.clone(),
        Literal::Integer(n) => n.to_string(),
        Literal::Float(f) => f.to_string(),
        Literal::Boolean(b) => b.to_string(),
        Literal::Map(pairs) => {
            let inner: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("'{}': '{}'", option_text(k), option_text(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => format!("{other:?}"),
    }
}

/// A keyspace.
#[derive(Debug, Clone)]
pub struct Keyspace {
    /// `replication` as given.
    pub replication: Vec<(String, String)>,
    /// `durable_writes`.
    pub durable_writes: bool,
}

/// The system tables' definitions, as Cassandra 4 / ScyllaDB name their columns (only the
/// columns drivers read).
pub const SYSTEM_TABLES: &[&str] = &[
    "CREATE TABLE system.local (key text PRIMARY KEY, host_id uuid, rpc_address inet, broadcast_address inet, listen_address inet, data_center text, rack text, tokens set<text>, cluster_name text, schema_version uuid, release_version text, partitioner text, cql_version text, native_protocol_version text, supported_features text)",
    "CREATE TABLE system.peers (peer inet PRIMARY KEY, host_id uuid, rpc_address inet, data_center text, rack text, tokens set<text>, schema_version uuid, release_version text)",
    "CREATE TABLE system_schema.keyspaces (keyspace_name text PRIMARY KEY, replication map<text, text>, durable_writes boolean)",
    "CREATE TABLE system_schema.tables (keyspace_name text, table_name text, id uuid, default_time_to_live int, compaction map<text, text>, comment text, PRIMARY KEY (keyspace_name, table_name))",
    "CREATE TABLE system_schema.columns (keyspace_name text, table_name text, column_name text, clustering_order text, column_name_bytes blob, kind text, position int, type text, PRIMARY KEY (keyspace_name, table_name, column_name))",
    "CREATE TABLE system_schema.types (keyspace_name text, type_name text, field_names list<text>, field_types list<text>, PRIMARY KEY (keyspace_name, type_name))",
    "CREATE TABLE system_schema.views (keyspace_name text, view_name text, base_table_name text, id uuid, PRIMARY KEY (keyspace_name, view_name))",
    "CREATE TABLE system_schema.functions (keyspace_name text, function_name text, argument_types list<text>, PRIMARY KEY (keyspace_name, function_name))",
    "CREATE TABLE system_schema.aggregates (keyspace_name text, aggregate_name text, argument_types list<text>, PRIMARY KEY (keyspace_name, aggregate_name))",
];

/// Keyspaces whose tables clients may read but not write.
pub fn is_system_keyspace(name: &str) -> bool {
    matches!(
        name,
        "system" | "system_schema" | "system_auth" | "system_distributed" | "system_traces"
    )
}

/// Checks a keyspace's replication and names its class fully.
pub fn checked_replication(given: &[(String, String)]) -> Result<Vec<(String, String)>, CqlError> {
    let class = given
        .iter()
        .find(|(k, _)| k == "class")
        .map(|(_, v)| v.rsplit('.').next().unwrap_or(v).to_string())
        .unwrap_or_default();
    let factors: Vec<&(String, String)> = given.iter().filter(|(k, _)| k != "class").collect();
    match class.as_str() {
        "SimpleStrategy" => {
            if factors.len() != 1 || factors[0].0 != "replication_factor" {
                return Err(CqlError::Config(
                    "SimpleStrategy takes exactly one option, replication_factor".into(),
                ));
            }
        }
        "NetworkTopologyStrategy" => {}
        other => {
            return Err(CqlError::Config(format!(
                "unknown replication strategy {other}"
            )))
        }
    }
    for (option, factor) in &factors {
        if factor.parse::<u32>().is_err() {
            return Err(CqlError::Config(format!(
                "replication factor for {option} must be a number, not {factor}"
            )));
        }
    }
    let mut out = vec![(
        "class".to_string(),
        format!("org.apache.cassandra.locator.{class}"),
    )];
    out.extend(factors.into_iter().cloned());
    Ok(out)
}
