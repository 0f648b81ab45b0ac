//! How a WebSocket `subscribe` is served ([`Plan`]), and which subscribers share a payload:
//! the group key of a subscription request.
//!
//! Two requests get the same key when they select the same fields, with the same aliases,
//! arguments and directives, once variables (and their defaults) are substituted: then every
//! event renders to the same JSON for both. The key is that selection printed in one canonical
//! form (insignificant whitespace, comments, operation and variable names gone). The one
//! argument left out is `afterMessageId`: it only shapes the subscriber's own replay, never
//! the live payload.

use std::fmt::Write;

use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::parser::Positioned;
use async_graphql::{Name, Request};
use async_graphql_value::{ConstValue, Value};

use mmsub_api::subscription_contract::{RESUME_ARGUMENT, ROOT_FIELD};

/// The canonical form of a subscription's selection: equal keys render equal payloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey(String);

/// How a WebSocket `subscribe` request is served.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// A subscription to [`ROOT_FIELD`]: admitted alone, delivered with its group.
    Shared(GroupKey),
    /// A subscription operation that selects other than exactly one root field.
    NotOneRootField,
    /// A subscription whose one root is a fragment spread or an inline fragment: refused, so
    /// that the subscriber hears why instead of a bare `complete`.
    FragmentRoot,
    /// Anything else (a query or mutation over WebSocket, or a document that does not parse):
    /// executed alone; the schema reports what is wrong with it.
    Alone,
}

/// How `request` is served. Uses (and keeps) the request's parsed document, so the document
/// is parsed once for planning and execution.
pub fn plan(request: &mut Request) -> Plan {
    let variables = std::mem::take(&mut request.variables);
    let operation_name = request.operation_name.clone();
    let capacity = request.query.len();
    let plan = match request.parsed_query() {
        Ok(document) => plan_document(document, operation_name.as_deref(), &variables, capacity),
        Err(_) => Plan::Alone,
    };
    request.variables = variables;
    plan
}

fn plan_document(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &async_graphql::Variables,
    capacity: usize,
) -> Plan {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), None) => op,
        (DocumentOperations::Single(_), Some(_)) => return Plan::Alone,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
            Some(op) => op,
            None => return Plan::Alone,
        },
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().expect("one operation")
        }
        (DocumentOperations::Multiple(_), None) => return Plan::Alone,
    };
    let operation = &operation.node;
    if operation.ty != OperationType::Subscription {
        return Plan::Alone;
    }
    let roots = &operation.selection_set.node.items;
    match roots.as_slice() {
        [root] => match &root.node {
            Selection::Field(f) if f.node.name.node == ROOT_FIELD => {}
            Selection::Field(_) => return Plan::Alone,
            Selection::FragmentSpread(_) | Selection::InlineFragment(_) => {
                return Plan::FragmentRoot
            }
        },
        _ => return Plan::NotOneRootField,
    }
    let defaults = operation
        .variable_definitions
        .iter()
        .filter_map(|d| Some((d.node.name.node.clone(), d.node.default_value.clone()?.node)));
    let mut printer = Printer {
        out: String::with_capacity(capacity),
        variables: variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(defaults)
            .collect(),
        root: true,
    };
    if printer
        .operation(
            document,
            &operation.directives,
            &operation.selection_set.node,
        )
        .is_err()
    {
        return Plan::Alone;
    }
    Plan::Shared(GroupKey(printer.out))
}

struct Printer {
    out: String,
    /// Request variables first, then defaults: the first match wins.
    variables: Vec<(Name, ConstValue)>,
    root: bool,
}

/// A variable the request did not supply and that has no default: let the schema say so.
struct Unresolved;

impl Printer {
    fn operation(
        &mut self,
        document: &ExecutableDocument,
        directives: &[Positioned<Directive>],
        selection: &SelectionSet,
    ) -> Result<(), Unresolved> {
        self.directives(directives)?;
        self.selection_set(selection)?;
        let mut fragments: Vec<_> = document.fragments.iter().collect();
        fragments.sort_by(|a, b| a.0.cmp(b.0));
        for (name, fragment) in fragments {
            let _ = write!(
                self.out,
                " fragment {name} on {}",
                fragment.node.type_condition.node.on.node
            );
            self.directives(&fragment.node.directives)?;
            self.selection_set(&fragment.node.selection_set.node)?;
        }
        Ok(())
    }

    fn selection_set(&mut self, set: &SelectionSet) -> Result<(), Unresolved> {
        self.out.push('{');
        for (i, item) in set.items.iter().enumerate() {
            if i > 0 {
                self.out.push(' ');
            }
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let root = std::mem::replace(&mut self.root, false);
                    if let Some(alias) = &field.alias {
                        let _ = write!(self.out, "{}:", alias.node);
                    }
                    self.out.push_str(&field.name.node);
                    let arguments = field
                        .arguments
                        .iter()
                        .filter(|(name, _)| !(root && name.node == RESUME_ARGUMENT));
                    self.arguments(arguments)?;
                    self.directives(&field.directives)?;
                    if !field.selection_set.node.items.is_empty() {
                        self.selection_set(&field.selection_set.node)?;
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let _ = write!(self.out, "...{}", spread.node.fragment_name.node);
                    self.directives(&spread.node.directives)?;
                }
                Selection::InlineFragment(inline) => {
                    self.out.push_str("...");
                    if let Some(condition) = &inline.node.type_condition {
                        let _ = write!(self.out, " on {}", condition.node.on.node);
                    }
                    self.directives(&inline.node.directives)?;
                    self.selection_set(&inline.node.selection_set.node)?;
                }
            }
        }
        self.out.push('}');
        Ok(())
    }

    fn directives(&mut self, directives: &[Positioned<Directive>]) -> Result<(), Unresolved> {
        for directive in directives {
            let _ = write!(self.out, "@{}", directive.node.name.node);
            self.arguments(directive.node.arguments.iter())?;
        }
        Ok(())
    }

    fn arguments<'a>(
        &mut self,
        arguments: impl Iterator<Item = &'a (Positioned<Name>, Positioned<Value>)>,
    ) -> Result<(), Unresolved> {
        let mut first = true;
        for (name, value) in arguments {
            self.out.push(if first { '(' } else { ',' });
            first = false;
            let value = value.node.clone().into_const_with(|variable| {
                self.variables
                    .iter()
                    .find(|(k, _)| *k == variable)
                    .map(|(_, v)| v.clone())
                    .ok_or(Unresolved)
            })?;
            let _ = write!(self.out, "{}:{value}", name.node);
        }
        if !first {
            self.out.push(')');
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::Variables;
    use serde_json::json;

    fn key(query: &str, variables: serde_json::Value) -> Plan {
        plan(&mut Request::new(query).variables(Variables::from_json(variables)))
    }

    #[test]
    fn same_selection_same_key_whatever_the_spelling() {
        let literal = key(
            r#"subscription { onNewChatMessage(channelIdentifier: "town-square") { message { id message } } }"#,
            json!({}),
        );
        let variable = key(
            "# resume-friendly\nsubscription S($c: String!, $after: String) {\n  onNewChatMessage(channelIdentifier: $c, afterMessageId: $after) {\n    message { id, message }\n  }\n}",
            json!({"c": "town-square", "after": "abc"}),
        );
        let defaulted = key(
            r#"subscription S($c: String! = "town-square") { onNewChatMessage(channelIdentifier: $c) { message { id message } } }"#,
            json!({}),
        );
        assert!(matches!(literal, Plan::Shared(_)));
        assert_eq!(literal, variable);
        assert_eq!(literal, defaulted);
    }

    #[test]
    fn anything_that_changes_the_payload_changes_the_key() {
        let base = r#"subscription($c: String!) { onNewChatMessage(channelIdentifier: $c) { message { id } } }"#;
        let a = key(base, json!({"c": "a"}));
        for other in [
            key(base, json!({"c": "b"})),
            key(
                r#"subscription($c: String!) { onNewChatMessage(channelIdentifier: $c) { message { id message } } }"#,
                json!({"c": "a"}),
            ),
            key(
                r#"subscription($c: String!) { m: onNewChatMessage(channelIdentifier: $c) { message { id } } }"#,
                json!({"c": "a"}),
            ),
            key(
                r#"subscription($c: String!, $x: Boolean!) { onNewChatMessage(channelIdentifier: $c) { message { id @include(if: $x) } } }"#,
                json!({"c": "a", "x": false}),
            ),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn other_operations_are_planned_alone() {
        assert_eq!(key("{ userList { id } }", json!({})), Plan::Alone);
        assert_eq!(key("subscription {", json!({})), Plan::Alone);
        assert_eq!(
            key("subscription { __typename onNewChatMessage(channelIdentifier: \"a\") { channelIdentifier } }", json!({})),
            Plan::NotOneRootField
        );
        // A variable with no value and no default: the schema's validation explains it.
        assert_eq!(
            key("subscription($c: String!) { onNewChatMessage(channelIdentifier: $c) { channelIdentifier } }", json!({})),
            Plan::Alone
        );
    }
}
