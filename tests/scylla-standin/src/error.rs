//! The CQL errors the stand-in answers, each with its protocol error code (spec section 9).

use cassandra_protocol::frame::message_error::{AlreadyExistsError, ErrorBody, ErrorType};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CqlError {
    /// 0x2000: the query text does not parse, or uses CQL this stand-in does not implement.
    #[error("{0}")]
    Syntax(String),
    /// 0x2200: it parses but is not valid (unknown table, wrong value, restriction not allowed).
    #[error("{0}")]
    Invalid(String),
    /// 0x2300: a keyspace or table option is not acceptable.
    #[error("{0}")]
    Config(String),
    /// 0x2400: the keyspace or table exists already.
    #[error("{message}")]
    AlreadyExists {
        /// The message.
        message: String,
        /// The keyspace.
        keyspace: String,
        /// The table, empty for a keyspace.
        table: String,
    },
    /// 0x000A: the frame breaks the protocol.
    #[error("{0}")]
    Protocol(String),
    /// 0x0100: wrong credentials.
    #[error("{0}")]
    Authentication(String),
    /// 0x2500: the prepared statement id is unknown.
    #[error("prepared statement not found")]
    Unprepared(Vec<u8>),
}

impl CqlError {
    /// The ERROR body for this error.
    pub fn body(&self) -> ErrorBody {
        use cassandra_protocol::frame::message_error::UnpreparedError;
        use cassandra_protocol::types::CBytesShort;
        let ty = match self {
            CqlError::Syntax(_) => ErrorType::Syntax,
            CqlError::Invalid(_) => ErrorType::Invalid,
            CqlError::Config(_) => ErrorType::Config,
            CqlError::AlreadyExists {
                keyspace, table, ..
            } => ErrorType::AlreadyExists(AlreadyExistsError {
                ks: keyspace.clone(),
                table: table.clone(),
            }),
            CqlError::Protocol(_) => ErrorType::Protocol,
            CqlError::Authentication(_) => ErrorType::Authentication,
            CqlError::Unprepared(id) => ErrorType::Unprepared(UnpreparedError {
                id: CBytesShort::new(id.clone()),
            }),
        };
        ErrorBody {
            message: self.to_string(),
            ty,
        }
    }
}

/// A shorthand for "this CQL is outside what the stand-in implements".
pub fn unsupported(what: &str) -> CqlError {
    CqlError::Syntax(format!("scylla-standin does not implement {what}"))
}
