//! Executing statements: [`execute`] runs one against the store, [`prepare`] describes one's
//! bind markers and result columns.
//!
//! Restrictions follow CQL's rules (`cql/dml.html#where-clause`): every partition key column
//! restricted by `=` (or `IN`), clustering columns restricted as a prefix of equalities and
//! then at most one range (single-column or tuple), and nothing on regular columns (that
//! would need `ALLOW FILTERING`, which the stand-in does not implement). A SELECT without a
//! WHERE clause scans every partition.
//!
//! Layout: `restrict` reads a WHERE clause into partitions and a clustering slice, which the
//! writes (`write`), the reads (`read`) and the prepared metadata (`prepare`) all use.

mod prepare;
mod read;
mod restrict;
mod write;

pub use prepare::prepare;

use read::select as read_rows;
use write::{delete, insert, update};

use crate::cql::{Literal, Parsed, Statement, TableName, Term};
use crate::data::Write;
use crate::error::CqlError;
use crate::store::{ChangeType, SchemaChanged, Store};
use crate::types::CqlType;

/// The parameters of one execution.
#[derive(Debug, Default)]
pub struct Execution<'a> {
    /// The bound values, one per marker.
    pub values: &'a [Write],
    /// Rows per page; `None` for all.
    pub page_size: Option<usize>,
    /// Where the previous page ended.
    pub paging_state: Option<&'a [u8]>,
    /// The client's default timestamp for writes.
    pub client_timestamp: Option<i64>,
    /// The connection's (or the request's) keyspace.
    pub keyspace: Option<&'a str>,
}

/// What a statement answered.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing (writes, or DDL that changed nothing).
    Void,
    /// Rows.
    Rows(Rows),
    /// `USE`.
    SetKeyspace(String),
    /// DDL that changed the schema.
    SchemaChange(SchemaChanged),
}

/// A page of rows and its metadata.
#[derive(Debug)]
pub struct Rows {
    /// The table's keyspace.
    pub keyspace: String,
    /// The table.
    pub table: String,
    /// The selected columns' names and types.
    pub columns: Vec<(String, CqlType)>,
    /// The rows, one value (or null) per column.
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    /// Set when more pages follow.
    pub paging_state: Option<Vec<u8>>,
}

/// A prepared statement's metadata (spec section 4.2.5.4).
#[derive(Debug)]
pub struct Prepared {
    /// The table it addresses, if any.
    pub table: Option<(String, String)>,
    /// Each marker's name and type.
    pub markers: Vec<(String, CqlType)>,
    /// The markers that bind the partition key, in key order (for token-aware routing).
    pub pk_indexes: Vec<i16>,
    /// The columns a SELECT answers.
    pub result: Vec<(String, CqlType)>,
}

/// The most partitions one `IN` may name.
const MAX_IN_VALUES: usize = 100;

/// Runs a statement.
pub fn execute(store: &mut Store, parsed: &Parsed, exec: &Execution) -> Result<Outcome, CqlError> {
    if exec.values.len() != parsed.markers.len() {
        return Err(CqlError::Invalid(format!(
            "there were {} markers(?) in CQL but {} bound variables",
            parsed.markers.len(),
            exec.values.len()
        )));
    }
    let schema_change =
        |change: Option<SchemaChanged>| Ok(change.map_or(Outcome::Void, Outcome::SchemaChange));
    match &parsed.statement {
        Statement::CreateKeyspace {
            name,
            if_not_exists,
            replication,
            durable_writes,
        } => schema_change(store.create_keyspace(
            name,
            *if_not_exists,
            replication,
            *durable_writes,
        )?),
        Statement::CreateTable(create) => {
            let keyspace = keyspace_of(&create.table, exec)?;
            schema_change(store.create_table(&keyspace, create)?)
        }
        Statement::AlterTableAdd { table, columns } => {
            let keyspace = keyspace_of(table, exec)?;
            let change = store.alter_table(&keyspace, &table.name, |s| s.add_columns(columns))?;
            Ok(Outcome::SchemaChange(change))
        }
        Statement::AlterTableWith { table, options } => {
            let keyspace = keyspace_of(table, exec)?;
            let change = store.alter_table(&keyspace, &table.name, |s| s.apply_options(options))?;
            Ok(Outcome::SchemaChange(change))
        }
        Statement::DropTable { table, if_exists } => {
            let keyspace = keyspace_of(table, exec)?;
            schema_change(store.drop_table(&keyspace, &table.name, *if_exists)?)
        }
        Statement::DropKeyspace { name, if_exists } => {
            schema_change(store.drop_keyspace(name, *if_exists)?)
        }
        Statement::Truncate(table) => {
            let keyspace = keyspace_of(table, exec)?;
            store
                .table_for_write(&keyspace, &table.name)?
                .partitions
                .clear();
            Ok(Outcome::Void)
        }
        Statement::Use(keyspace) => {
            if !store.keyspaces.contains_key(keyspace) {
                return Err(CqlError::Invalid(format!(
                    "Keyspace '{keyspace}' does not exist"
                )));
            }
            Ok(Outcome::SetKeyspace(keyspace.clone()))
        }
        Statement::Insert {
            table,
            columns,
            values,
            using,
        } => {
            let keyspace = keyspace_of(table, exec)?;
            insert(store, &keyspace, &table.name, columns, values, using, exec)?;
            Ok(Outcome::Void)
        }
        Statement::Update {
            table,
            using,
            assignments,
            relations,
        } => {
            let keyspace = keyspace_of(table, exec)?;
            update(
                store,
                &keyspace,
                &table.name,
                using,
                assignments,
                relations,
                exec,
            )?;
            Ok(Outcome::Void)
        }
        Statement::Delete {
            columns,
            table,
            using,
            relations,
        } => {
            let keyspace = keyspace_of(table, exec)?;
            delete(
                store,
                &keyspace,
                &table.name,
                columns,
                using,
                relations,
                exec,
            )?;
            Ok(Outcome::Void)
        }
        Statement::Select(select) => {
            let keyspace = keyspace_of(&select.table, exec)?;
            read_rows(store, &keyspace, select, exec).map(Outcome::Rows)
        }
    }
}

fn keyspace_of(table: &TableName, exec: &Execution) -> Result<String, CqlError> {
    table
        .keyspace
        .clone()
        .or_else(|| exec.keyspace.map(str::to_string))
        .ok_or_else(|| {
            CqlError::Invalid(
                "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename"
                    .into(),
            )
        })
}

/// A term's value as a value of `ty`.
fn resolve(term: &Term, ty: &CqlType, exec: &Execution) -> Result<Write, CqlError> {
    match term {
        Term::Literal(Literal::Null) => Ok(Write::Null),
        Term::Literal(literal) => ty.encode_literal(literal).map(Write::Value),
        Term::Bind(i) => {
            let value = exec.values[*i].clone();
            if let Write::Value(bytes) = &value {
                ty.validate(bytes)?;
            }
            Ok(value)
        }
    }
}

/// A term that must have a value (keys, restrictions).
fn required(term: &Term, ty: &CqlType, exec: &Execution, what: &str) -> Result<Vec<u8>, CqlError> {
    match resolve(term, ty, exec)? {
        Write::Value(bytes) => Ok(bytes),
        Write::Null => Err(CqlError::Invalid(format!("Invalid null value for {what}"))),
        Write::Unset => Err(CqlError::Invalid(format!("Invalid unset value for {what}"))),
    }
}

fn int_term(term: &Term, exec: &Execution, what: &str) -> Result<Option<i64>, CqlError> {
    let ty = if what == "timestamp" {
        CqlType::Bigint
    } else {
        CqlType::Int
    };
    match resolve(term, &ty, exec)? {
        Write::Value(bytes) => Ok(Some(if bytes.len() == 8 {
            i64::from_be_bytes(bytes.try_into().unwrap_or_default())
        } else {
            i64::from(i32::from_be_bytes(bytes.try_into().unwrap_or_default()))
        })),
        Write::Null => Err(CqlError::Invalid(format!("Invalid null value of {what}"))),
        Write::Unset => Ok(None),
    }
}

/// A schema change's type name, for logs.
pub fn change_name(change: ChangeType) -> &'static str {
    match change {
        ChangeType::Created => "CREATED",
        ChangeType::Updated => "UPDATED",
        ChangeType::Dropped => "DROPPED",
    }
}
