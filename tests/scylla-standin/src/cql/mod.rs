//! The CQL subset: a lexer and a recursive-descent parser into typed statements.
//!
//! Grammar followed: the CQL reference (Cassandra's `cql/ddl.html`, `cql/dml.html`,
//! `cql/definitions.html`). Unquoted identifiers and keywords are case-insensitive (folded to
//! lower case); double-quoted identifiers keep their case. Anything outside the subset is a
//! syntax error that names what is missing, never a silent success.
//!
//! Layout: this file holds the statements' types, `lex` turns text into tokens, and `parse`
//! turns tokens into a [`Statement`].

mod lex;
mod parse;

use crate::error::CqlError;

/// A literal constant of the query text.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null`
    Null,
    /// `true` / `false`
    Boolean(bool),
    /// An integer.
    Integer(i128),
    /// A float.
    Float(f64),
    /// `'quoted'`
    String(String),
    /// `0xcafe`
    Blob(Vec<u8>),
    /// An unquoted UUID.
    Uuid([u8; 16]),
    /// `[a, b]` or `{a, b}`
    Collection(Vec<Literal>),
    /// `{k: v, …}`
    Map(Vec<(Literal, Literal)>),
}

/// A value in a statement: a literal or a bind marker.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// A constant.
    Literal(Literal),
    /// The n-th bind marker of the statement (`?` or `:name`).
    Bind(usize),
}

/// A keyspace-qualified (or not) table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The keyspace, if named.
    pub keyspace: Option<String>,
    /// The table.
    pub name: String,
}

/// A comparison operator of a WHERE relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// The right side of a relation.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// One value.
    Single(Term),
    /// A tuple of values, for `(a, b) > (x, y)`.
    Tuple(Vec<Term>),
    /// `IN (x, y)`, or `IN ?` binding a list.
    In(InValues),
}

/// The values of an `IN`.
#[derive(Debug, Clone, PartialEq)]
pub enum InValues {
    /// Listed in the text.
    Listed(Vec<Term>),
    /// One marker bound to a list.
    Bound(usize),
}

/// `column op value` or `(c1, c2) op (v1, v2)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// One column, or the tuple's columns.
    pub columns: Vec<String>,
    /// The operator (`Eq` for `IN`).
    pub operator: Operator,
    /// The value side.
    pub operand: Operand,
}

/// `USING TTL … AND TIMESTAMP …`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Using {
    /// Seconds to live.
    pub ttl: Option<Term>,
    /// The write's timestamp, microseconds.
    pub timestamp: Option<Term>,
}

/// One selected expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A column.
    Column(String),
    /// `writetime(column)`
    WriteTime(String),
    /// `ttl(column)`
    Ttl(String),
    /// `count(*)`
    Count,
}

/// A `SELECT`.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// `None` for `*`.
    pub selectors: Option<Vec<Selector>>,
    /// From.
    pub table: TableName,
    /// The WHERE relations (`AND`ed).
    pub relations: Vec<Relation>,
    /// `ORDER BY` columns, `true` for descending.
    pub order_by: Vec<(String, bool)>,
    /// `LIMIT`.
    pub limit: Option<Term>,
}

/// A `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    /// The table.
    pub table: TableName,
    /// `IF NOT EXISTS`.
    pub if_not_exists: bool,
    /// Column names and their type names, in order.
    pub columns: Vec<(String, String)>,
    /// Partition key columns.
    pub partition_key: Vec<String>,
    /// Clustering columns.
    pub clustering: Vec<String>,
    /// `CLUSTERING ORDER BY`, `true` for descending.
    pub clustering_order: Vec<(String, bool)>,
    /// The other `WITH` options, by name.
    pub options: Vec<(String, Literal)>,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE KEYSPACE`
    CreateKeyspace {
        /// Its name.
        name: String,
        /// `IF NOT EXISTS`
        if_not_exists: bool,
        /// `WITH replication = {…}`, values as text.
        replication: Vec<(String, String)>,
        /// `durable_writes`.
        durable_writes: bool,
    },
    /// `CREATE TABLE`
    CreateTable(CreateTable),
    /// `ALTER TABLE … ADD`
    AlterTableAdd {
        /// The table.
        table: TableName,
        /// New columns and type names.
        columns: Vec<(String, String)>,
    },
    /// `ALTER TABLE … WITH`
    AlterTableWith {
        /// The table.
        table: TableName,
        /// Options.
        options: Vec<(String, Literal)>,
    },
    /// `DROP KEYSPACE`
    DropKeyspace {
        /// Its name.
        name: String,
        /// `IF EXISTS`
        if_exists: bool,
    },
    /// `DROP TABLE`
    DropTable {
        /// The table.
        table: TableName,
        /// `IF EXISTS`
        if_exists: bool,
    },
    /// `TRUNCATE`
    Truncate(TableName),
    /// `USE`
    Use(String),
    /// `INSERT`
    Insert {
        /// Into.
        table: TableName,
        /// Columns.
        columns: Vec<String>,
        /// Their values.
        values: Vec<Term>,
        /// `USING`.
        using: Using,
    },
    /// `UPDATE`
    Update {
        /// The table.
        table: TableName,
        /// `USING`.
        using: Using,
        /// `SET column = value`.
        assignments: Vec<(String, Term)>,
        /// The row.
        relations: Vec<Relation>,
    },
    /// `DELETE`
    Delete {
        /// Columns to delete; empty deletes rows.
        columns: Vec<String>,
        /// From.
        table: TableName,
        /// `USING TIMESTAMP`.
        using: Using,
        /// Which rows.
        relations: Vec<Relation>,
    },
    /// `SELECT`
    Select(Select),
}

/// A statement with the names of its bind markers (`None` for `?`).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The statement.
    pub statement: Statement,
    /// One entry per marker, in order.
    pub markers: Vec<Option<String>>,
}
/// Parses one statement (a trailing `;` is allowed).
pub fn parse(text: &str) -> Result<Parsed, CqlError> {
    parse::statement(lex::lex(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ranged_select_parses() {
        let parsed = parse(
            "SELECT a, writetime(b) FROM ks.t WHERE k = ? AND (c1, c2) < (?, ?) ORDER BY c1 DESC LIMIT ?;",
        )
        .unwrap();
        assert_eq!(parsed.markers.len(), 4);
        assert_eq!(parsed.markers[3].as_deref(), Some("[limit]"));
        let Statement::Select(select) = parsed.statement else {
            panic!("not a select");
        };
        assert_eq!(select.relations.len(), 2);
        assert_eq!(select.order_by, vec![("c1".to_string(), true)]);
    }

    #[test]
    fn keyspace_with_replication_parses() {
        let parsed = parse(
            "CREATE KEYSPACE IF NOT EXISTS \"Ks\" WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3} AND durable_writes = true",
        )
        .unwrap();
        let Statement::CreateKeyspace {
            name, replication, ..
        } = parsed.statement
        else {
            panic!("not a keyspace");
        };
        assert_eq!(name, "Ks");
        assert_eq!(replication[1], ("dc1".to_string(), "3".to_string()));
    }

    #[test]
    fn outside_the_subset_is_an_error() {
        for text in [
            "SELECT * FROM t WHERE a = 1 ALLOW FILTERING",
            "INSERT INTO t (a) VALUES (1) IF NOT EXISTS",
            "CREATE INDEX ON t (a)",
            "SELECT * FROM t WHERE a = 'unterminated",
            "GRANT ALL ON t TO x",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn quotes_and_uuids_lex() {
        let parsed =
            parse("INSERT INTO t (k, u) VALUES ('it''s', 123e4567-e89b-12d3-a456-426614174000)")
                .unwrap();
        let Statement::Insert { values, .. } = parsed.statement else {
            panic!("not an insert");
        };
        assert_eq!(values[0], Term::Literal(Literal::String("it's".into())));
        assert!(matches!(values[1], Term::Literal(Literal::Uuid(_))));
    }
}
