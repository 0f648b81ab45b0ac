//! One connection's requests: handshake, authentication, queries, prepared statements and batches.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use cassandra_protocol::frame::message_authenticate::BodyResAuthenticate;
use cassandra_protocol::frame::message_request::RequestBody;
use cassandra_protocol::frame::message_result::{
    BodyResResultPrepared, BodyResResultRows, BodyResResultSetKeyspace, PreparedMetadata,
    ResResultBody, TableSpec,
};
use cassandra_protocol::frame::message_supported::BodyResSupported;
use cassandra_protocol::frame::{Envelope, Flags, Opcode, Serialize, Version};
use cassandra_protocol::types::{CBytes, CBytesShort};

use super::request;
use super::results::{bound_values, col_spec, rows_metadata, schema_change, statement_id};
use super::{PreparedStatement, Session};
use crate::cql::{self, Parsed};
use crate::error::CqlError;
use crate::query::{self, Execution, Outcome};

impl Session {
    /// The answer to one request: its opcode and body.
    pub(super) fn answer(&mut self, envelope: &Envelope) -> (Opcode, Vec<u8>) {
        match self.respond(envelope) {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(%error, "request failed");
                (Opcode::Error, error.body().serialize_to_vec(Version::V4))
            }
        }
    }

    fn respond(&mut self, envelope: &Envelope) -> Result<(Opcode, Vec<u8>), CqlError> {
        if envelope.flags.contains(Flags::COMPRESSION) {
            return Err(CqlError::Protocol("compression was not negotiated".into()));
        }
        if matches!(
            envelope.opcode,
            Opcode::Query | Opcode::Execute | Opcode::Batch
        ) {
            if !self.started {
                return Err(CqlError::Protocol("send STARTUP first".into()));
            }
            if !self.authenticated {
                return Err(CqlError::Authentication("authenticate first".into()));
            }
            self.count();
            return self.statement(envelope.opcode, &envelope.body);
        }
        let request = envelope.request_body().map_err(|e| {
            CqlError::Protocol(format!("malformed {:?} body: {e}", envelope.opcode))
        })?;
        let ready = (Opcode::Ready, Vec::new());
        match request {
            RequestBody::Options(_) => {
                let data = HashMap::from([
                    ("CQL_VERSION".to_string(), vec!["3.4.5".to_string()]),
                    ("COMPRESSION".to_string(), Vec::new()),
                    ("PROTOCOL_VERSIONS".to_string(), vec!["4/v4".to_string()]),
                ]);
                Ok((
                    Opcode::Supported,
                    BodyResSupported { data }.serialize_to_vec(Version::V4),
                ))
            }
            RequestBody::Startup(startup) => {
                if startup
                    .map
                    .get("COMPRESSION")
                    .is_some_and(|c| !c.is_empty())
                {
                    return Err(CqlError::Protocol(
                        "this node supports no compression".into(),
                    ));
                }
                self.started = true;
                if self.authenticated {
                    return Ok(ready);
                }
                let body = BodyResAuthenticate {
                    data: "org.apache.cassandra.auth.PasswordAuthenticator".into(),
                };
                Ok((Opcode::Authenticate, body.serialize_to_vec(Version::V4)))
            }
            RequestBody::AuthResponse(response) => {
                let token = response.data.as_slice().unwrap_or_default();
                let mut parts = token.split(|b| *b == 0).skip(1);
                let user = parts.next().unwrap_or_default();
                let password = parts.next().unwrap_or_default();
                match &self.shared.credentials {
                    Some((u, p)) if u.as_bytes() == user && p.as_bytes() == password => {
                        self.authenticated = true;
                        // AUTH_SUCCESS carries a null [bytes] token.
                        Ok((Opcode::AuthSuccess, (-1_i32).to_be_bytes().to_vec()))
                    }
                    Some(_) => Err(CqlError::Authentication(
                        "Provided username and/or password are incorrect".into(),
                    )),
                    None => Err(CqlError::Protocol("no authentication was asked for".into())),
                }
            }
            _ if !self.started => Err(CqlError::Protocol("send STARTUP first".into())),
            _ if !self.authenticated => Err(CqlError::Authentication("authenticate first".into())),
            RequestBody::Register(_) => {
                self.registered = true;
                Ok(ready)
            }
            RequestBody::Prepare(prepare) => {
                let parsed = cql::parse(&prepare.query)?;
                let keyspace = prepare.keyspace.clone().or_else(|| self.keyspace.clone());
                let metadata = {
                    let store = self
                        .shared
                        .store
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    query::prepare(&store, &parsed, keyspace.as_deref())?
                };
                let id = statement_id(&prepare.query, keyspace.as_deref());
                self.shared
                    .prepared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(id.clone(), PreparedStatement { parsed, keyspace });
                let spec = metadata.table.as_ref().map(|(ks, t)| TableSpec {
                    ks_name: ks.clone(),
                    table_name: t.clone(),
                });
                let col_specs = metadata
                    .markers
                    .iter()
                    .map(|(name, ty)| col_spec(name, ty))
                    .collect();
                let body = BodyResResultPrepared {
                    id: CBytesShort::new(id),
                    result_metadata_id: None,
                    metadata: PreparedMetadata {
                        pk_indexes: metadata.pk_indexes,
                        global_table_spec: spec.clone(),
                        col_specs,
                    },
                    result_metadata: rows_metadata(spec, &metadata.result, None),
                };
                Ok((
                    Opcode::Result,
                    ResResultBody::Prepared(body).serialize_to_vec(Version::V4),
                ))
            }
            other => Err(CqlError::Protocol(format!("unexpected request {other:?}"))),
        }
    }

    /// QUERY, EXECUTE or BATCH, decoded by [`request`](super::request).
    fn statement(&mut self, opcode: Opcode, body: &[u8]) -> Result<(Opcode, Vec<u8>), CqlError> {
        match opcode {
            Opcode::Query => {
                let query = request::query(body)?;
                let parsed = cql::parse(&query.text)?;
                let keyspace = self.keyspace.clone();
                self.run(&parsed, &query.params, keyspace.as_deref(), None)
            }
            Opcode::Execute => {
                let execute = request::execute(body)?;
                let statement = self.prepared(&execute.id)?;
                self.run(
                    &statement.parsed,
                    &execute.params,
                    statement.keyspace.as_deref(),
                    None,
                )
            }
            _ => {
                let batch = request::batch(body)?;
                for item in batch.items {
                    let (statement, values) = match item {
                        request::BatchItem::Text(text, values) => (
                            PreparedStatement {
                                parsed: cql::parse(&text)?,
                                keyspace: self.keyspace.clone(),
                            },
                            values,
                        ),
                        request::BatchItem::Prepared(id, values) => (self.prepared(&id)?, values),
                    };
                    if matches!(statement.parsed.statement, cql::Statement::Select(_)) {
                        return Err(CqlError::Invalid("a BATCH may not contain SELECT".into()));
                    }
                    let params = request::Params {
                        values,
                        timestamp: batch.timestamp,
                        ..request::Params::default()
                    };
                    self.run(
                        &statement.parsed,
                        &params,
                        statement.keyspace.as_deref(),
                        batch.timestamp,
                    )?;
                }
                Ok((
                    Opcode::Result,
                    ResResultBody::Void.serialize_to_vec(Version::V4),
                ))
            }
        }
    }

    fn count(&self) {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn prepared(&self, id: &[u8]) -> Result<PreparedStatement, CqlError> {
        self.shared
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| CqlError::Unprepared(id.to_vec()))
    }

    fn run(
        &mut self,
        parsed: &Parsed,
        params: &request::Params,
        keyspace: Option<&str>,
        batch_timestamp: Option<i64>,
    ) -> Result<(Opcode, Vec<u8>), CqlError> {
        let values = bound_values(parsed, &params.values)?;
        let paging_state = params.paging_state.as_deref();
        let exec = Execution {
            values: &values,
            page_size: params
                .page_size
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0),
            paging_state,
            client_timestamp: batch_timestamp.or(params.timestamp),
            keyspace,
        };
        let outcome = {
            let mut store = self
                .shared
                .store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            query::execute(&mut store, parsed, &exec)?
        };
        let body = match outcome {
            Outcome::Void => ResResultBody::Void,
            Outcome::SetKeyspace(keyspace) => {
                self.keyspace = Some(keyspace.clone());
                ResResultBody::SetKeyspace(BodyResResultSetKeyspace { body: keyspace })
            }
            Outcome::SchemaChange(change) => {
                tracing::debug!(change = query::change_name(change.change), keyspace = %change.keyspace, "schema changed");
                let _ = self.shared.events.send(change.clone());
                ResResultBody::SchemaChange(schema_change(&change))
            }
            Outcome::Rows(rows) => {
                let spec = TableSpec {
                    ks_name: rows.keyspace.clone(),
                    table_name: rows.table.clone(),
                };
                let metadata = rows_metadata(
                    Some(spec),
                    &rows.columns,
                    rows.paging_state.map(CBytes::new),
                );
                let rows_content: Vec<Vec<CBytes>> = rows
                    .rows
                    .into_iter()
                    .map(|row| {
                        row.into_iter()
                            .map(|v| v.map_or_else(CBytes::new_null, CBytes::new))
                            .collect()
                    })
                    .collect();
                ResResultBody::Rows(BodyResResultRows {
                    metadata,
                    rows_count: i32::try_from(rows_content.len()).unwrap_or(i32::MAX),
                    rows_content,
                    protocol_version: Version::V4,
                })
            }
        };
        Ok((Opcode::Result, body.serialize_to_vec(Version::V4)))
    }
}
