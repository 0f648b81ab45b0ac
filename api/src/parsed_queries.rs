//! Parsed GraphQL documents by query text, so an operation sent again skips the parser.
//!
//! Chat clients send the same few operations over and over with different variables. Parsing
//! `textMessageSend` was a tenth of the server's CPU per message (`perf record --call-graph
//! dwarf` during `loadtest fanout --subscribers 10 --channels 10 --messages 7500 --rate 1500`).
//! In a loop, parsing that mutation takes 13.9 µs and a cache hit (lookup and copy) 0.44 µs.
//! Only parsing is skipped: depth, complexity and validation still run on every request, with
//! its own variables. A parse does not depend on the schema, so an entry is right for any.
//!
//! Bounded in entries and in query size; when full, the cache starts over, so a client sending
//! a stream of distinct queries costs a parse per query, as without a cache, and no memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;

/// Distinct documents kept.
pub const MAX_ENTRIES: usize = 256;
/// Longer queries are parsed every time (and are rarely sent twice).
pub const MAX_QUERY_BYTES: usize = 8 << 10;

/// Parsed documents by text, for operations sent again (bounded, see [`MAX_QUERY_BYTES`]).
#[derive(Default)]
pub struct ParsedQueries {
    documents: Mutex<HashMap<Box<str>, Arc<ExecutableDocument>>>,
}

impl ParsedQueries {
    /// Gives `request` its parsed document from the cache, or runs `check` on the text and
    /// then parses it and keeps the result (a text found in the cache passed `check` already).
    /// An `Err` from `check` leaves the request unparsed. A query that does not parse is left
    /// alone: execution reports the syntax error.
    pub fn prepare<E>(
        &self,
        request: &mut async_graphql::Request,
        check: impl FnOnce(&str) -> Result<(), E>,
    ) -> Result<(), E> {
        if request.query.len() > MAX_QUERY_BYTES {
            return check(&request.query);
        }
        let cached = self.lock().get(request.query.as_str()).cloned();
        if let Some(document) = cached {
            request.set_parsed_query((*document).clone());
            return Ok(());
        }
        check(&request.query)?;
        let Ok(document) = request.parsed_query() else {
            return Ok(());
        };
        let document = Arc::new(document.clone());
        let mut documents = self.lock();
        if documents.len() >= MAX_ENTRIES {
            documents.clear();
        }
        documents.insert(request.query.as_str().into(), document);
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<ExecutableDocument>>> {
        // A panic while holding the lock leaves a valid map: keep using it.
        self.documents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    struct Query;

    #[Object]
    impl Query {
        async fn echo(&self, text: String) -> String {
            text
        }
    }

    async fn run(cache: &ParsedQueries, query: &str, text: &str) -> async_graphql::Response {
        let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
        let mut request = async_graphql::Request::new(query).variables(
            async_graphql::Variables::from_json(serde_json::json!({ "t": text })),
        );
        let _ = cache.prepare(&mut request, no_check);
        schema.execute(request).await
    }

    fn no_check(_: &str) -> Result<(), ()> {
        Ok(())
    }

    #[tokio::test]
    async fn a_repeated_query_runs_from_the_cache_with_its_own_variables() {
        let cache = ParsedQueries::default();
        let query = "query($t: String!) { echo(text: $t) }";
        let first = run(&cache, query, "one").await;
        let second = run(&cache, query, "two").await;
        assert_eq!(cache.len(), 1);
        assert_eq!(first.data.into_json().unwrap()["echo"], "one");
        assert_eq!(second.data.into_json().unwrap()["echo"], "two");
    }

    #[tokio::test]
    async fn validation_still_runs_on_a_cached_document() {
        let cache = ParsedQueries::default();
        let query = "query($t: String!) { echo(text: $t) }";
        run(&cache, query, "one").await;
        let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
        // Same text, but the required variable is missing this time.
        let mut request = async_graphql::Request::new(query);
        let _ = cache.prepare(&mut request, no_check);
        let response = schema.execute(request).await;
        assert!(!response.errors.is_empty(), "{response:?}");
    }

    #[tokio::test]
    async fn syntax_errors_are_reported_and_not_kept() {
        let cache = ParsedQueries::default();
        let response = run(&cache, "query { echo(", "x").await;
        assert!(!response.errors.is_empty());
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let cache = ParsedQueries::default();
        for n in 0..MAX_ENTRIES + 10 {
            let query = format!("query($t: String!) {{ a{n}: echo(text: $t) }}");
            run(&cache, &query, "x").await;
        }
        assert!(cache.len() <= MAX_ENTRIES);
        let long = format!(
            "query($t: String!) {{ echo(text: $t) }} # {}",
            "x".repeat(MAX_QUERY_BYTES)
        );
        let before = cache.len();
        assert_eq!(
            run(&cache, &long, "kept out")
                .await
                .data
                .into_json()
                .unwrap()["echo"],
            "kept out"
        );
        assert_eq!(cache.len(), before);
    }
}
