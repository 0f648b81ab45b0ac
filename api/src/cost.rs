//! What a GraphQL document costs as it will execute, counted before anything runs.
//!
//! async-graphql's own complexity and depth checks visit each fragment definition once, so a
//! document whose fragments spread the previous one twice, 30 levels deep, passed them while
//! its execution expanded to 2^30 fields. This counter walks the document the way the executor
//! will: every use of a fragment is counted in full, aliases count separately, and the
//! selection of a paged field (one with a `page: PageType` argument) is counted once per item
//! its `pageSize` asks for. Input lists count one per element (`channelCreate(members:)`).
//!
//! The walk is bounded by what it counts: it stops as soon as the total passes the budget,
//! every step (field, spread or inline fragment) costs at least one, and its recursion is
//! bounded by [`MAX_NESTING`]. So a hostile document costs at most `budget` steps to refuse,
//! and fragment cycles end there too (validation names them when the budget is large).
//!
//! [`check_text_nesting`] runs before the parser: the parser recurses on nested braces, and a
//! megabyte of `{` must be refused before it reaches it.

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::parser::Positioned;
use async_graphql::Variables;
use async_graphql_value::{ConstValue, Name, Value};

/// Deepest nesting of selections, fragment spreads and brackets the walk (and the parser's
/// input check) follows. GraphiQL's introspection query nests 15 selections.
pub const MAX_NESTING: usize = 64;

/// The page size a paged field has when its `page` argument does not say (the contract's).
pub const DEFAULT_PAGE_SIZE: u64 = 10;

/// What one document may cost.
#[derive(Debug, Clone, Copy)]
pub struct CostLimits {
    /// Most fields a document may execute, counted as described in the module doc.
    pub max_cost: u64,
    /// Deepest selection (fields within fields), through fragments.
    pub max_depth: usize,
    /// Most [`FieldCosts::password_checks`] fields one document may execute: each hashes a password, so a
    /// document of 500 aliased guesses is refused whole instead of queueing 500 hashes.
    pub max_password_checks: u64,
    /// The schema's costly fields.
    pub fields: FieldCosts,
}

/// Which root fields of the schema cost more than one field: the schema names them
/// (`crate::schema::FIELD_COSTS`), the counter only counts.
#[derive(Debug, Clone, Copy)]
pub struct FieldCosts {
    /// Fields that take `page: PageType`: their selection counts once per item, and without
    /// the argument they return a page of [`DEFAULT_PAGE_SIZE`].
    pub paged: &'static [&'static str],
    /// Root fields that hash a password when they run.
    pub password_checks: &'static [&'static str],
}

/// Why a document was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// It would execute more fields than `limit`.
    #[error("Query is too complex: it would execute more than {limit} fields (fragments count each time they are used, aliases separately, and a page's fields once per item of pageSize). Ask for fewer or smaller pages.")]
    TooCostly {
        /// The budget (`--max-query-complexity`).
        limit: u64,
    },
    /// It nests deeper than `limit`.
    #[error("Query is nested too deep: the limit is {limit} levels.")]
    TooDeep {
        /// The deepest nesting allowed.
        limit: usize,
    },
    #[error(
        "Too many logins or sign-ups in one request: the limit is {limit}; send one per request."
    )]
    /// It would check more passwords than `limit`.
    TooManyPasswordChecks {
        /// The most password checks per request.
        limit: u64,
    },
}

impl CostError {
    /// The error as a GraphQL error object, `extensions.code` naming the limit.
    pub fn to_graphql(&self) -> serde_json::Value {
        let (code, limit) = match self {
            CostError::TooCostly { limit } => ("QUERY_TOO_COMPLEX", *limit),
            CostError::TooDeep { limit } => ("QUERY_TOO_DEEP", *limit as u64),
            CostError::TooManyPasswordChecks { limit } => ("TOO_MANY_PASSWORD_CHECKS", *limit),
        };
        serde_json::json!({
            "message": self.to_string(),
            "extensions": { "code": code, "limit": limit },
        })
    }
}

/// Refuses text that nests `{`, `[` or `(` deeper than [`MAX_NESTING`], outside strings and
/// comments. Linear in the text, no allocation.
pub fn check_text_nesting(query: &str) -> Result<(), CostError> {
    let bytes = query.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(CostError::TooDeep { limit: MAX_NESTING });
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                if bytes[i..].starts_with(b"\"\"\"") {
                    i += 3;
                    while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 2;
                } else {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The cost of the document's costliest operation, or why it is refused. Every operation is
/// counted: which one runs is chosen later, and none may be over the budget.
pub fn document_cost(
    document: &ExecutableDocument,
    variables: &Variables,
    limits: CostLimits,
) -> Result<u64, CostError> {
    let mut costliest = 0;
    let operations: Vec<&Positioned<OperationDefinition>> = match &document.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(ops) => ops.values().collect(),
    };
    for operation in operations {
        let mut walk = Walk {
            document,
            operation: &operation.node,
            variables,
            limits,
            total: 0,
            password_checks: 0,
        };
        walk.selection_set(&operation.node.selection_set.node, 1, 0, 0)?;
        costliest = costliest.max(walk.total);
    }
    Ok(costliest)
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    operation: &'a OperationDefinition,
    variables: &'a Variables,
    limits: CostLimits,
    total: u64,
    password_checks: u64,
}

impl Walk<'_> {
    /// Adds `cost` to the total; `Err` once it passes the budget.
    fn charge(&mut self, cost: u64) -> Result<(), CostError> {
        self.total = self.total.saturating_add(cost);
        if self.total > self.limits.max_cost {
            return Err(CostError::TooCostly {
                limit: self.limits.max_cost,
            });
        }
        Ok(())
    }

    /// `times`: how often this selection set executes; `depth`: fields above it; `nesting`:
    /// every level of recursion (fields, spreads, inline fragments) above it.
    fn selection_set(
        &mut self,
        set: &SelectionSet,
        times: u64,
        depth: usize,
        nesting: usize,
    ) -> Result<(), CostError> {
        if nesting > MAX_NESTING {
            return Err(CostError::TooDeep { limit: MAX_NESTING });
        }
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => self.field(&field.node, times, depth + 1, nesting)?,
                Selection::FragmentSpread(spread) => {
                    // A spread is a step of the walk even if its fragment selects nothing new.
                    self.charge(1)?;
                    // An unknown fragment is validation's to report.
                    if let Some(fragment) =
                        self.document.fragments.get(&spread.node.fragment_name.node)
                    {
                        let set = &fragment.node.selection_set.node;
                        self.selection_set(set, times, depth, nesting + 1)?;
                    }
                }
                Selection::InlineFragment(inline) => {
                    self.charge(1)?;
                    let set = &inline.node.selection_set.node;
                    self.selection_set(set, times, depth, nesting + 1)?;
                }
            }
        }
        Ok(())
    }

    fn field(
        &mut self,
        field: &Field,
        times: u64,
        depth: usize,
        nesting: usize,
    ) -> Result<(), CostError> {
        if depth > self.limits.max_depth {
            return Err(CostError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        self.charge(times)?;
        if depth == 1
            && self
                .limits
                .fields
                .password_checks
                .contains(&field.name.node.as_str())
        {
            self.password_checks = self.password_checks.saturating_add(times);
            if self.password_checks > self.limits.max_password_checks {
                return Err(CostError::TooManyPasswordChecks {
                    limit: self.limits.max_password_checks,
                });
            }
        }
        for (_, value) in &field.arguments {
            let elements = self.list_elements(&value.node);
            self.charge(times.saturating_mul(elements))?;
        }
        if field.selection_set.node.items.is_empty() {
            return Ok(());
        }
        let items = match field.get_argument("page") {
            Some(page) => self.page_size(&page.node),
            None if self.limits.fields.paged.contains(&field.name.node.as_str()) => {
                DEFAULT_PAGE_SIZE
            }
            None => 1,
        };
        self.selection_set(
            &field.selection_set.node,
            times.saturating_mul(items),
            depth,
            nesting + 1,
        )
    }

    /// The items a `page: PageType` argument asks for (at least 1: a refused size costs one
    /// resolver call).
    fn page_size(&self, page: &Value) -> u64 {
        let number = |n: &async_graphql_value::Number| n.as_u64().unwrap_or(1).max(1);
        let from_const = |page: &ConstValue| match page {
            ConstValue::Object(fields) => match fields.get("pageSize") {
                Some(ConstValue::Number(n)) => number(n),
                _ => DEFAULT_PAGE_SIZE,
            },
            _ => DEFAULT_PAGE_SIZE,
        };
        match page {
            Value::Variable(name) => self.variable(name).map_or(DEFAULT_PAGE_SIZE, from_const),
            Value::Object(fields) => match fields.get("pageSize") {
                Some(Value::Number(n)) => number(n),
                Some(Value::Variable(name)) => match self.variable(name) {
                    Some(ConstValue::Number(n)) => number(n),
                    _ => DEFAULT_PAGE_SIZE,
                },
                _ => DEFAULT_PAGE_SIZE,
            },
            _ => DEFAULT_PAGE_SIZE,
        }
    }

    /// Elements of the lists in an argument value, at any depth.
    fn list_elements(&self, value: &Value) -> u64 {
        match value {
            Value::List(items) => items.iter().fold(items.len() as u64, |n, v| {
                n.saturating_add(self.list_elements(v))
            }),
            Value::Object(fields) => fields
                .values()
                .fold(0, |n, v| n.saturating_add(self.list_elements(v))),
            Value::Variable(name) => self.variable(name).map_or(0, const_list_elements),
            _ => 0,
        }
    }

    /// A variable's value as sent, or its default.
    fn variable(&self, name: &Name) -> Option<&ConstValue> {
        if let Some(value) = self.variables.get(name) {
            return Some(value);
        }
        self.operation
            .variable_definitions
            .iter()
            .find(|d| d.node.name.node == *name)
            .and_then(|d| d.node.default_value())
    }
}

fn const_list_elements(value: &ConstValue) -> u64 {
    match value {
        ConstValue::List(items) => items.iter().fold(items.len() as u64, |total, v| {
            total.saturating_add(const_list_elements(v))
        }),
        ConstValue::Object(fields) => fields
            .values()
            .fold(0, |total, v| total.saturating_add(const_list_elements(v))),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    const LIMITS: CostLimits = CostLimits {
        max_cost: 50_000,
        max_depth: 16,
        max_password_checks: 2,
        fields: crate::schema::FIELD_COSTS,
    };

    fn cost(query: &str, variables: serde_json::Value) -> Result<u64, CostError> {
        let document = parse_query(query).unwrap();
        document_cost(&document, &Variables::from_json(variables), LIMITS)
    }

    /// `levels` fragments, each spreading the one before it twice.
    fn fragment_bomb(levels: usize) -> String {
        let mut query = String::from("query { ...f0 }\nfragment fz on Query { __typename }\n");
        query.push_str("fragment f1 on Query { ...fz ...fz }\n");
        for n in 2..=levels {
            query.push_str(&format!(
                "fragment f{n} on Query {{ ...f{m} ...f{m} }}\n",
                m = n - 1
            ));
        }
        query.replace("...f0", &format!("...f{levels}"))
    }

    #[test]
    fn fields_count_once_each_and_pages_multiply_their_selection() {
        assert_eq!(cost("{ __typename }", serde_json::json!({})), Ok(1));
        // getMessageList + 10 × (data + message + hasNext)
        assert_eq!(
            cost(
                "{ getMessageList(channelIdentifier: \"a\") { data { message } hasNext } }",
                serde_json::json!({})
            ),
            Ok(1 + 10 * 3)
        );
        assert_eq!(
            cost(
                "query($p: PageType) { getMessageList(channelIdentifier: \"a\", page: $p) { data { message } } }",
                serde_json::json!({ "p": { "pageSize": 1000 } })
            ),
            Ok(1 + 1000 * 2)
        );
        assert_eq!(
            cost(
                "query($n: Int = 50) { userList(page: { pageSize: $n }) { data { id } } }",
                serde_json::json!({})
            ),
            Ok(1 + 50 * 2)
        );
    }

    #[test]
    fn every_use_of_a_fragment_and_every_alias_counts() {
        let once = cost("{ a: __typename }", serde_json::json!({})).unwrap();
        let aliased = cost(
            "{ a: __typename b: __typename c: __typename }",
            serde_json::json!({}),
        )
        .unwrap();
        assert_eq!(aliased, 3 * once);
        // 2 spreads + 2 × (the fragment's two fields)
        assert_eq!(
            cost(
                "{ ...F ...F } fragment F on Query { a: __typename b: __typename }",
                serde_json::json!({})
            ),
            Ok(2 + 4)
        );
        assert_eq!(
            cost(
                "{ ... on Query { __typename } ... @include(if: true) { __typename } }",
                serde_json::json!({})
            ),
            Ok(4)
        );
    }

    #[test]
    fn a_fragment_bomb_is_refused_after_at_most_the_budget_in_steps() {
        assert_eq!(
            cost(&fragment_bomb(30), serde_json::json!({})),
            Err(CostError::TooCostly { limit: 50_000 })
        );
        // A cycle is refused the same way, however validation would name it.
        assert!(cost(
            "{ ...A } fragment A on Query { __typename ...A }",
            serde_json::json!({})
        )
        .is_err());
        let small = cost(&fragment_bomb(8), serde_json::json!({})).unwrap();
        assert!(small > 256 && small < 1024, "{small}");
    }

    #[test]
    fn aliased_pages_add_up() {
        let page = "getMessageList(channelIdentifier: \"a\", page: { pageSize: 200 }) { data { message } }";
        let query = format!(
            "{{ {} }}",
            (0..160)
                .map(|n| format!("m{n}: {page}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(
            cost(&query, serde_json::json!({})),
            Err(CostError::TooCostly { limit: 50_000 })
        );
    }

    #[test]
    fn input_lists_count_their_elements() {
        let members: Vec<String> = (0..100).map(|n| format!("u{n}")).collect();
        assert_eq!(
            cost(
                "mutation($m: [String]!) { channelCreate(channelName: \"x\", members: $m) { status } }",
                serde_json::json!({ "m": members })
            ),
            Ok(1 + 100 + 1)
        );
    }

    #[test]
    fn password_checks_are_counted_through_aliases_and_fragments() {
        let login = "tokenAuth(username: \"a\", password: \"b\") { token }";
        assert!(cost(
            &format!("mutation {{ a: {login} b: {login} }}"),
            serde_json::json!({})
        )
        .is_ok());
        assert_eq!(
            cost(&format!("mutation {{ a: {login} ...F }} fragment F on Mutation {{ b: {login} c: {login} }}"), serde_json::json!({})),
            Err(CostError::TooManyPasswordChecks { limit: 2 })
        );
    }

    #[test]
    fn depth_follows_fragments() {
        let deep = "{ a { ...F } } fragment F on T { b { c { d { e { f { g { h { i { j { k { l { m { n { o { p { q } } } } } } } } } } } } } } } }";
        assert_eq!(
            cost(deep, serde_json::json!({})),
            Err(CostError::TooDeep { limit: 16 })
        );
    }

    #[test]
    fn deeply_bracketed_text_is_refused_before_parsing() {
        let text = "{".repeat(100_000);
        assert_eq!(
            check_text_nesting(&text),
            Err(CostError::TooDeep { limit: MAX_NESTING })
        );
        assert!(check_text_nesting(&format!("{{ a(s: \"{}\") }}", "{".repeat(1000))).is_ok());
        assert!(check_text_nesting(&format!("# {}\n{{ a }}", "[".repeat(1000))).is_ok());
        assert!(
            check_text_nesting(&format!("{{ a(s: \"\"\"{}\"\"\") }}", "(".repeat(1000))).is_ok()
        );
    }
}
