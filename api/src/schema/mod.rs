//! The GraphQL schema of the contract, shared by HTTP and both WebSocket protocols.
//!
//! Resolvers read two things from the context: the node-wide [`AppState`] (schema data) and the
//! request's [`Viewer`] (request data, from the token). WebSocket subscriptions also carry an
//! [`Admission`] or a [`GroupFeed`]; see the `subscription` module.

mod mutation;
mod query;
mod subscription;
pub mod types;

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, Schema};
use mmsub_events::Bus;
use mmsub_metrics::Metrics;

use crate::auth::{JwtKeys, Viewer};
use crate::backend::{Actor, BackendError, ChatBackend, PageRequest};
use crate::client::{ClientAddr, ClientSlots};
use crate::cost::{self, CostError, CostLimits, FieldCosts};
use crate::parsed_queries::ParsedQueries;
use crate::settings::ApiSettings;
use crate::throttle::{Throttle, Throttles};
pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::{
    contract as subscription_contract, Admission, GroupFeed, Resume, SubscriptionRoot,
};
use types::PageType;

/// The fields of this schema that cost more than one field when they run (`cost.rs`):
/// `api/tests/contract_schema.rs` checks them against the served SDL.
pub const FIELD_COSTS: FieldCosts = FieldCosts {
    paged: &["userList", "channelList", "getMessageList"],
    password_checks: &["tokenAuth", "userGetToken", "userCreate"],
};

/// The contract's schema.
pub type MmsubSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Everything a resolver may need, shared by all requests of a node.
pub struct AppState {
    /// The chat backend: the embedded store or Mattermost.
    pub backend: Arc<dyn ChatBackend>,
    /// Where new messages are published.
    pub bus: Arc<dyn Bus>,
    /// The keys that sign and check tokens.
    pub jwt: JwtKeys,
    /// The node's limits.
    pub settings: ApiSettings,
    /// Documents of operations seen before, for GraphQL over HTTP.
    pub parsed_queries: ParsedQueries,
    /// Logins, sign-ups and sends per user and per client address.
    pub throttles: Throttles,
    /// The node's metrics (the gateway counts with the same ones).
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// The state of an API node over `backend`, publishing to `bus`, with empty caches and
    /// throttles as `settings` sets them.
    pub fn new(
        backend: Arc<dyn ChatBackend>,
        bus: Arc<dyn Bus>,
        jwt: JwtKeys,
        settings: ApiSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let throttles = Throttles {
            login_per_user: Throttle::new(settings.login_rate_per_user),
            login_per_client: Throttle::new(settings.login_rate_per_client),
            signup_per_client: Throttle::new(settings.signup_rate_per_client),
            send_per_user: Throttle::new(settings.send_rate_per_user),
            logins_in_flight: ClientSlots::new(settings.max_concurrent_logins_per_client.max(1)),
        };
        Self {
            backend,
            bus,
            jwt,
            settings,
            parsed_queries: ParsedQueries::default(),
            throttles,
            metrics,
        }
    }

    /// Readies a client's request for execution, over HTTP or WebSocket alike: refuses text
    /// nested too deep for the parser, parses it (or takes the cached parse), refuses a
    /// document whose execution would cost more than the limits allow, before any resolver
    /// runs, and gives it the request data every resolver may read: the viewer, the client
    /// address and the answer's byte budget. A document that does not parse is left for
    /// execution to report.
    pub fn prepare(
        &self,
        mut request: async_graphql::Request,
        viewer: Viewer,
        client: ClientAddr,
    ) -> Result<async_graphql::Request, CostError> {
        self.parsed_queries
            .prepare(&mut request, cost::check_text_nesting)?;
        let limits = CostLimits {
            max_cost: self.settings.max_query_complexity as u64,
            max_depth: self.settings.max_query_depth,
            max_password_checks: self.settings.max_password_checks_per_request,
            fields: FIELD_COSTS,
        };
        let variables = std::mem::take(&mut request.variables);
        let counted = match request.parsed_query() {
            Ok(document) => cost::document_cost(document, &variables, limits).map(drop),
            Err(_) => Ok(()),
        };
        request.variables = variables;
        counted?;
        Ok(request
            .data(viewer)
            .data(client)
            .data(ResponseBudget::new(self.settings.max_response_bytes)))
    }
}

/// The schema over `state`, which every resolver reads.
pub fn build_schema(state: Arc<AppState>) -> MmsubSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        // Depth and cost are counted by `AppState::prepare` as the document will execute
        // (`crate::cost`); async-graphql's own checks count each fragment once.
        .limit_recursive_depth(crate::cost::MAX_NESTING)
        .data(state.clone())
        .finish()
}

/// Request data: the bytes of content one answer may still carry (`max_response_bytes`).
/// Paged fields take turns with it: each reads its page with what is left as the page's limit
/// and takes what it read off, so that aliases cannot each read the whole ceiling at once.
pub struct ResponseBudget {
    remaining: tokio::sync::Mutex<u64>,
}

impl ResponseBudget {
    /// A budget of `max_bytes` for one answer.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            remaining: tokio::sync::Mutex::new(max_bytes),
        }
    }
}

/// Runs `fetch` with the bytes the answer may still carry (the whole ceiling when the request
/// has no [`ResponseBudget`]), and takes what it read off the budget.
async fn within_budget<T, F>(
    ctx: &Context<'_>,
    fetch: impl FnOnce(u64) -> F,
    used: impl Fn(&T) -> u64,
) -> async_graphql::Result<T>
where
    F: std::future::Future<Output = crate::backend::BackendResult<T>>,
{
    let Some(budget) = ctx.data_opt::<ResponseBudget>() else {
        return fetch(state(ctx).settings.max_response_bytes)
            .await
            .map_err(graphql_error);
    };
    let mut remaining = budget.remaining.lock().await;
    let found = fetch(*remaining).await.map_err(graphql_error)?;
    let used = used(&found);
    if used > *remaining {
        return Err(graphql_error(BackendError::too_large(
            state(ctx).settings.max_response_bytes,
        )));
    }
    *remaining -= used;
    Ok(found)
}

/// The contract's answer to an operation the viewer may not run.
pub const PERMISSION_DENIED: &str = "You do not have permission to perform this action";

fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<Arc<AppState>>()
}

/// The client address the request came from ([`AppState::prepare`] stores it).
fn client(ctx: &Context<'_>) -> ClientAddr {
    ctx.data_opt::<ClientAddr>()
        .copied()
        .unwrap_or(ClientAddr::UNKNOWN)
}

/// The caller, or the contract's permission error.
fn require_user<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Actor> {
    ctx.data_opt::<Viewer>()
        .and_then(Viewer::actor)
        .ok_or_else(|| {
            async_graphql::Error::new(PERMISSION_DENIED)
                .extend_with(|_, e| e.set("code", "FORBIDDEN"))
        })
}

/// A backend failure as a GraphQL error, with the contract's status in `extensions`.
fn graphql_error(e: BackendError) -> async_graphql::Error {
    let code = e.http_status();
    async_graphql::Error::new(e.to_string()).extend_with(|_, ext| {
        ext.set("code", types::status_text(code));
        ext.set("statusCode", code.as_u16());
    })
}

/// Validates a `PageType`; `first` is the number of the first page (1 or 0).
fn page(
    settings: &ApiSettings,
    page: Option<PageType>,
    first: i32,
) -> async_graphql::Result<PageRequest> {
    let page = page.unwrap_or_default();
    let size = page.page_size.unwrap_or(10);
    let number = page.page_number.unwrap_or(first);
    let max = settings.max_page_size as i32;
    if !(1..=max).contains(&size) {
        return Err(graphql_error(BackendError::Invalid(format!(
            "pageSize must be between 1 and {max}."
        ))));
    }
    if number < first {
        return Err(graphql_error(BackendError::Invalid(format!(
            "pageNumber must be {first} or more."
        ))));
    }
    Ok(PageRequest {
        size: size as u32,
        number: (number - first) as u32,
        max_bytes: u64::MAX,
    })
}
