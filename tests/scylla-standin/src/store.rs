//! The node's state: keyspaces, tables and their rows, the clock, and the DDL that changes
//! the schema (and the system tables that describe it).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cql::{self, CreateTable, Statement};
use crate::data::{Table, Write};
use crate::error::CqlError;
use crate::schema::{
    checked_replication, is_system_keyspace, Keyspace, Kind, TableSchema, SYSTEM_TABLES,
};
use crate::types::encode_collection;

/// What a schema change did, for the `SCHEMA_CHANGE` result and event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChanged {
    /// Created, updated or dropped.
    pub change: ChangeType,
    /// The keyspace.
    pub keyspace: String,
    /// The table, if a table changed.
    pub table: Option<String>,
}

/// The kind of a schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Created,
    /// Altered.
    Updated,
    /// Dropped.
    Dropped,
}

/// The whole node.
#[derive(Debug)]
pub struct Store {
    pub(crate) keyspaces: BTreeMap<String, Keyspace>,
    pub(crate) tables: BTreeMap<(String, String), Table>,
    /// Seconds the clock has been moved forward by the tests.
    clock_offset: i64,
    last_micros: i64,
    host_id: [u8; 16],
    /// Where clients should connect (`system.local.rpc_address`).
    rpc_address: std::net::IpAddr,
}

impl Store {
    /// A node with its system tables, answering as `rpc_address`.
    pub fn new(rpc_address: std::net::IpAddr) -> Self {
        let mut store = Store {
            keyspaces: BTreeMap::new(),
            tables: BTreeMap::new(),
            clock_offset: 0,
            last_micros: 0,
            host_id: random_uuid(),
            rpc_address,
        };
        for keyspace in ["system", "system_schema"] {
            store.keyspaces.insert(
                keyspace.to_string(),
                Keyspace {
                    replication: vec![(
                        "class".into(),
                        "org.apache.cassandra.locator.LocalStrategy".into(),
                    )],
                    durable_writes: true,
                },
            );
        }
        for ddl in SYSTEM_TABLES {
            let Ok(cql::Parsed {
                statement: Statement::CreateTable(create),
                ..
            }) = cql::parse(ddl)
            else {
                unreachable!("the system tables' DDL parses");
            };
            let keyspace = create.table.keyspace.clone().unwrap_or_default();
            let schema = TableSchema::from_create(&keyspace, &create)
                .unwrap_or_else(|e| unreachable!("the system tables are valid: {e}"));
            store.tables.insert(
                (keyspace, create.table.name.clone()),
                Table {
                    schema,
                    partitions: BTreeMap::new(),
                    writes_since_purge: 0,
                },
            );
        }
        let describe: Vec<(String, String)> = store.tables.keys().cloned().collect();
        for (keyspace, table) in describe {
            store.describe_table(&keyspace, &table);
        }
        for keyspace in ["system", "system_schema"] {
            store.describe_keyspace(keyspace);
        }
        store.write_local();
        store
    }

    /// Seconds since the epoch on this node's clock.
    pub fn now_seconds(&self) -> i64 {
        unix_micros() / 1_000_000 + self.clock_offset
    }

    /// Moves the clock forward (TTLs expire as if that time had passed).
    pub fn advance_clock(&mut self, seconds: i64) {
        self.clock_offset += seconds;
    }

    /// A write timestamp: microseconds on this node's clock, strictly increasing.
    pub fn next_timestamp(&mut self) -> i64 {
        let now = unix_micros() + self.clock_offset * 1_000_000;
        self.last_micros = now.max(self.last_micros + 1);
        self.last_micros
    }

    /// The table, or the CQL error for an unknown one.
    pub fn table(&self, keyspace: &str, name: &str) -> Result<&Table, CqlError> {
        self.tables
            .get(&(keyspace.to_string(), name.to_string()))
            .ok_or_else(|| unconfigured(keyspace, name))
    }

    /// The table for writing: unknown tables and system tables are errors.
    pub fn table_for_write(&mut self, keyspace: &str, name: &str) -> Result<&mut Table, CqlError> {
        if is_system_keyspace(keyspace) {
            return Err(CqlError::Invalid(format!(
                "{keyspace} is a system keyspace: its tables cannot be written"
            )));
        }
        self.tables
            .get_mut(&(keyspace.to_string(), name.to_string()))
            .ok_or_else(|| unconfigured(keyspace, name))
    }

    /// `CREATE KEYSPACE`.
    pub fn create_keyspace(
        &mut self,
        name: &str,
        if_not_exists: bool,
        replication: &[(String, String)],
        durable_writes: bool,
    ) -> Result<Option<SchemaChanged>, CqlError> {
        if self.keyspaces.contains_key(name) {
            if if_not_exists {
                return Ok(None);
            }
            return Err(CqlError::AlreadyExists {
                message: format!("Keyspace {name} already exists"),
                keyspace: name.to_string(),
                table: String::new(),
            });
        }
        let replication = checked_replication(replication)?;
        self.keyspaces.insert(
            name.to_string(),
            Keyspace {
                replication,
                durable_writes,
            },
        );
        self.describe_keyspace(name);
        Ok(Some(self.changed(ChangeType::Created, name, None)))
    }

    /// `CREATE TABLE`.
    pub fn create_table(
        &mut self,
        keyspace: &str,
        create: &CreateTable,
    ) -> Result<Option<SchemaChanged>, CqlError> {
        if !self.keyspaces.contains_key(keyspace) {
            return Err(CqlError::Invalid(format!(
                "Keyspace {keyspace} does not exist"
            )));
        }
        if is_system_keyspace(keyspace) {
            return Err(CqlError::Invalid(format!(
                "{keyspace} is a system keyspace: no tables can be created in it"
            )));
        }
        let key = (keyspace.to_string(), create.table.name.clone());
        if self.tables.contains_key(&key) {
            if create.if_not_exists {
                return Ok(None);
            }
            return Err(CqlError::AlreadyExists {
                message: format!("Table {keyspace}.{} already exists", create.table.name),
                keyspace: keyspace.to_string(),
                table: create.table.name.clone(),
            });
        }
        let schema = TableSchema::from_create(keyspace, create)?;
        self.tables.insert(
            key,
            Table {
                schema,
                partitions: BTreeMap::new(),
                writes_since_purge: 0,
            },
        );
        self.describe_table(keyspace, &create.table.name);
        Ok(Some(self.changed(
            ChangeType::Created,
            keyspace,
            Some(&create.table.name),
        )))
    }

    /// `ALTER TABLE`: adds columns or changes options.
    pub fn alter_table(
        &mut self,
        keyspace: &str,
        name: &str,
        change: impl FnOnce(&mut TableSchema) -> Result<(), CqlError>,
    ) -> Result<SchemaChanged, CqlError> {
        let table = self.table_for_write(keyspace, name)?;
        let mut schema = table.schema.clone();
        change(&mut schema)?;
        table.schema = schema;
        self.describe_table(keyspace, name);
        Ok(self.changed(ChangeType::Updated, keyspace, Some(name)))
    }

    /// `DROP TABLE`.
    pub fn drop_table(
        &mut self,
        keyspace: &str,
        name: &str,
        if_exists: bool,
    ) -> Result<Option<SchemaChanged>, CqlError> {
        if self.table_for_write(keyspace, name).is_err() && if_exists {
            return Ok(None);
        }
        self.table_for_write(keyspace, name)?;
        self.tables
            .remove(&(keyspace.to_string(), name.to_string()));
        self.undescribe_table(keyspace, name);
        Ok(Some(self.changed(
            ChangeType::Dropped,
            keyspace,
            Some(name),
        )))
    }

    /// `DROP KEYSPACE`.
    pub fn drop_keyspace(
        &mut self,
        name: &str,
        if_exists: bool,
    ) -> Result<Option<SchemaChanged>, CqlError> {
        if is_system_keyspace(name) {
            return Err(CqlError::Invalid(format!("{name} cannot be dropped")));
        }
        if self.keyspaces.remove(name).is_none() {
            if if_exists {
                return Ok(None);
            }
            return Err(CqlError::Invalid(format!("Keyspace {name} does not exist")));
        }
        let tables: Vec<String> = self
            .tables
            .keys()
            .filter(|(k, _)| k == name)
            .map(|(_, t)| t.clone())
            .collect();
        for table in tables {
            self.tables.remove(&(name.to_string(), table.clone()));
            self.undescribe_table(name, &table);
        }
        let row = [text(name)];
        self.system_delete("keyspaces", &row, &[]);
        Ok(Some(self.changed(ChangeType::Dropped, name, None)))
    }

    fn changed(
        &mut self,
        change: ChangeType,
        keyspace: &str,
        table: Option<&str>,
    ) -> SchemaChanged {
        self.write_local();
        SchemaChanged {
            change,
            keyspace: keyspace.to_string(),
            table: table.map(str::to_string),
        }
    }

    /// Writes `system.local` with a new schema version.
    fn write_local(&mut self) {
        let address = match self.rpc_address {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let tokens = encode_collection(std::iter::once(vec![b"0".as_slice()]));
        let values = [
            ("key", text("local")),
            ("host_id", self.host_id.to_vec()),
            ("rpc_address", address.clone()),
            ("broadcast_address", address.clone()),
            ("listen_address", address),
            ("data_center", text("datacenter1")),
            ("rack", text("rack1")),
            ("tokens", tokens),
            ("cluster_name", text("scylla-standin")),
            ("schema_version", random_uuid().to_vec()),
            ("release_version", text("4.0.0")),
            (
                "partitioner",
                text("org.apache.cassandra.dht.Murmur3Partitioner"),
            ),
            ("cql_version", text("3.4.5")),
            ("native_protocol_version", text("4")),
        ];
        self.system_write("system", "local", &values);
    }

    fn describe_keyspace(&mut self, name: &str) {
        let Some(keyspace) = self.keyspaces.get(name).cloned() else {
            return;
        };
        let replication = encode_collection(
            keyspace
                .replication
                .iter()
                .map(|(k, v)| vec![k.as_bytes(), v.as_bytes()]),
        );
        self.system_write(
            "system_schema",
            "keyspaces",
            &[
                ("keyspace_name", text(name)),
                ("replication", replication),
                ("durable_writes", vec![u8::from(keyspace.durable_writes)]),
            ],
        );
    }

    fn describe_table(&mut self, keyspace: &str, name: &str) {
        let Some(table) = self
            .tables
            .get(&(keyspace.to_string(), name.to_string()))
            .map(|t| t.schema.clone())
        else {
            return;
        };
        let compaction = table.options.get("compaction").cloned().unwrap_or_default();
        self.system_write(
            "system_schema",
            "tables",
            &[
                ("keyspace_name", text(keyspace)),
                ("table_name", text(name)),
                ("id", random_uuid().to_vec()),
                (
                    "default_time_to_live",
                    table.default_ttl.to_be_bytes().to_vec(),
                ),
                (
                    "compaction",
                    encode_collection(std::iter::once(vec![
                        b"class".as_slice(),
                        compaction.as_bytes(),
                    ])),
                ),
                (
                    "comment",
                    text(table.options.get("comment").map_or("", String::as_str)),
                ),
            ],
        );
        for column in &table.columns {
            let position = match column.kind {
                Kind::Regular => -1_i32,
                _ => i32::try_from(column.position).unwrap_or(i32::MAX),
            };
            let order = match (column.kind, column.descending) {
                (Kind::Clustering, true) => "desc",
                (Kind::Clustering, false) => "asc",
                _ => "none",
            };
            self.system_write(
                "system_schema",
                "columns",
                &[
                    ("keyspace_name", text(keyspace)),
                    ("table_name", text(name)),
                    ("column_name", text(&column.name)),
                    ("clustering_order", text(order)),
                    ("column_name_bytes", text(&column.name)),
                    ("kind", text(column.kind.name())),
                    ("position", position.to_be_bytes().to_vec()),
                    ("type", text(&column.ty.cql_name())),
                ],
            );
        }
    }

    fn undescribe_table(&mut self, keyspace: &str, name: &str) {
        let partition = [text(keyspace)];
        self.system_delete("tables", &partition, &[text(name)]);
        self.system_delete("columns", &partition, &[text(name)]);
    }

    /// Writes one row of a system table, as an INSERT would.
    fn system_write(&mut self, keyspace: &str, table: &str, values: &[(&str, Vec<u8>)]) {
        let timestamp = self.next_timestamp();
        let Some(table) = self
            .tables
            .get_mut(&(keyspace.to_string(), table.to_string()))
        else {
            return;
        };
        let schema = table.schema.clone();
        let mut row = vec![Write::Unset; schema.columns.len()];
        for (name, value) in values {
            if let Some(index) = schema.column(name) {
                row[index] = Write::Value(value.clone());
            }
        }
        crate::data::upsert(table, &row, timestamp, None, true, 0);
    }

    /// Deletes the rows of a `system_schema` table under a partition and clustering prefix.
    fn system_delete(&mut self, table: &str, partition: &[Vec<u8>], clustering: &[Vec<u8>]) {
        let timestamp = self.next_timestamp();
        let Some(table) = self
            .tables
            .get_mut(&("system_schema".to_string(), table.to_string()))
        else {
            return;
        };
        crate::data::delete_prefix(table, partition, clustering, timestamp);
    }
}

/// The error Cassandra gives for an unknown table.
fn unconfigured(keyspace: &str, name: &str) -> CqlError {
    CqlError::Invalid(format!("unconfigured table {keyspace}.{name}"))
}

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Microseconds since the epoch, real time.
fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A random (version 4) UUID.
pub fn random_uuid() -> [u8; 16] {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}
