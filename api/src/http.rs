//! GraphQL over HTTP at `/graphql/`: `POST` executes, `GET` serves GraphiQL.
//!
//! The body is read up to `max_body_bytes` (413 beyond); the `Authorization` header
//! (`JWT <token>` or `Bearer <token>`) becomes the request's [`Viewer`].

use std::time::Instant;

use async_graphql::parser::types::{DocumentOperations, Selection};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use mmsub_metrics::labels::{ErrorKind, Operation};
use serde_json::json;

use crate::auth::Viewer;
use crate::client::ClientAddr;
use crate::request_id::{self, RequestId};
use crate::schema::{AppState, MmsubSchema};

/// An HTTP answer with its whole body.
pub type HttpResponse = Response<Full<Bytes>>;

/// A JSON answer with `status`.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A request that never reached GraphQL execution, answered in GraphQL's error shape.
pub fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    json_response(
        status,
        serde_json::to_vec(&json!({ "errors": [{ "message": message }] })).unwrap_or_default(),
    )
}

/// How a request's `Origin` relates to this server.
enum Origin<'a> {
    /// No `Origin` header (not a browser), or the page's own origin (GraphiQL).
    SameOrNone,
    /// A cross-origin page listed in `--cors-allowed-origins`.
    Allowed(&'a str),
    /// Any other web page: refused, so that no visitor's browser can be made to sign up or
    /// guess passwords for it.
    Refused,
}

fn origin<'a, B>(request: &'a Request<B>, allowed: &[String]) -> Origin<'a> {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Origin::SameOrNone;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    if host.is_some() && origin_host == host {
        return Origin::SameOrNone;
    }
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Origin::Allowed(origin);
    }
    Origin::Refused
}

fn with_cors(mut response: HttpResponse, origin: &str) -> HttpResponse {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    response
}

/// A document refused before execution (`AppState::prepare`), as GraphQL answers a
/// validation error: status 200, `errors` only, with the limit in `extensions`.
pub fn refused_response(refused: &crate::cost::CostError) -> HttpResponse {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&json!({ "errors": [refused.to_graphql()] })).unwrap_or_default(),
    )
}

/// The GraphiQL page (`GET /graphql/`).
pub fn graphiql_page() -> HttpResponse {
    let html = async_graphql::http::GraphiQLSource::build()
        .endpoint("/graphql/")
        .subscription_endpoint("/ws/graphql/")
        .title("mmsub GraphiQL")
        .finish();
    let mut response = Response::new(Full::new(Bytes::from(html)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Answers one request to `/graphql/`: GraphiQL for a browser's `GET`, or the operation of a
/// `GET` query string or a `POST` body, within the body, content-type and origin rules.
pub async fn handle<B>(schema: &MmsubSchema, app: &AppState, request: Request<B>) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    // Owned: the request moves into `execute` below.
    let cors = match origin(&request, &app.settings.cors_allowed_origins) {
        Origin::Allowed(origin) => Some(origin.to_owned()),
        Origin::Refused if *request.method() != Method::GET => {
            app.metrics.http.error(ErrorKind::Origin);
            return error_response(
                StatusCode::FORBIDDEN,
                "Cross-origin requests from this origin are not allowed (MMSUB_CORS_ALLOWED_ORIGINS).",
            );
        }
        Origin::Refused | Origin::SameOrNone => None,
    };
    let response = match *request.method() {
        Method::OPTIONS => {
            let mut r = Response::new(Full::default());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Method::GET => graphiql_page(),
        Method::POST => execute(schema, app, request).await,
        _ => {
            app.metrics.http.error(ErrorKind::Method);
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "Use POST for GraphQL requests, GET for GraphiQL.",
            )
        }
    };
    match cors {
        Some(origin) => with_cors(response, &origin),
        None => response,
    }
}

/// How a POST body carries its operation.
enum BodyKind {
    /// `application/json`: `{"query", "variables", "operationName"}`.
    Json,
    /// `application/graphql`: the query text itself.
    Graphql,
}

fn body_kind<B>(request: &Request<B>) -> Option<BodyKind> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())?;
    let essence = content_type.split(';').next()?.trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Some(BodyKind::Json)
    } else if essence.eq_ignore_ascii_case("application/graphql") {
        Some(BodyKind::Graphql)
    } else {
        None
    }
}

/// A request that failed before execution: its kind (counted) and its answer.
type Failed = (ErrorKind, HttpResponse);

async fn execute<B>(schema: &MmsubSchema, app: &AppState, request: Request<B>) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let metrics = &app.metrics.http;
    let id = RequestId::from_header(request.headers().get(request_id::HEADER));
    let mut answer = match read(app, request).await {
        Ok(request) => {
            let mut request = request.data(id.clone());
            let operation = root_field(&mut request);
            let response = schema.execute(request).await;
            if response.is_err() {
                metrics.error(ErrorKind::Graphql);
            }
            let max_bytes = app.settings.max_response_bytes;
            let answer = json_response(StatusCode::OK, serialize_capped(&response, max_bytes));
            metrics.graphql(operation, started.elapsed());
            answer
        }
        Err((kind, response)) => {
            metrics.error(kind);
            response
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        answer.headers_mut().insert(request_id::HEADER, value);
    }
    answer
}

/// The contract's root field `request` executes: its operation's only top-level field, or
/// [`Operation::Other`] (several fields, fragments, introspection).
fn root_field(request: &mut async_graphql::Request) -> Operation {
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return Operation::Other;
    };
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => {
            match operations.get(name.as_str()) {
                Some(operation) => operation,
                None => return Operation::Other,
            }
        }
        (DocumentOperations::Multiple(_), None) => return Operation::Other,
    };
    match operation.node.selection_set.node.items.as_slice() {
        [only] => match &only.node {
            Selection::Field(field) => Operation::of_field(field.node.name.node.as_str()),
            _ => Operation::Other,
        },
        _ => Operation::Other,
    }
}

/// Reads, parses and prepares the request's operation, within the body, content-type and
/// cost rules.
async fn read<B>(app: &AppState, request: Request<B>) -> Result<async_graphql::Request, Failed>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let limit = app.settings.max_body_bytes;
    let Some(kind) = body_kind(&request) else {
        return Err((ErrorKind::MediaType, error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send the operation as application/json ({\"query\", \"variables\", \"operationName\"}) or application/graphql.",
        )));
    };
    let client = ClientAddr::stored_in(&request);
    let viewer = Viewer::from_authorization_header(
        &app.jwt,
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let deadline = app.settings.body_read_timeout;
    let collect = Limited::new(request.into_body(), limit).collect();
    let mut collect = std::pin::pin!(collect);
    // A small body has usually arrived with its headers: no timer for it.
    let read = match futures::FutureExt::now_or_never(collect.as_mut()) {
        Some(read) => Ok(read),
        None => tokio::time::timeout(deadline, collect).await,
    };
    let body = match read {
        Err(_) => {
            return Err((
                ErrorKind::BodyTimeout,
                error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "The request body did not arrive within {} ms.",
                        deadline.as_millis()
                    ),
                ),
            ))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((
                ErrorKind::BodyTooLarge,
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("Request body is larger than the limit of {limit} bytes."),
                ),
            ))
        }
        Ok(Err(_)) => {
            return Err((
                ErrorKind::BadBody,
                error_response(
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read.",
                ),
            ))
        }
    };
    let parsed = match kind {
        BodyKind::Json => serde_json::from_slice(&body),
        BodyKind::Graphql => match std::str::from_utf8(&body) {
            Ok(query) => Ok(async_graphql::Request::new(query)),
            Err(_) => {
                return Err((
                    ErrorKind::BadBody,
                    error_response(
                        StatusCode::BAD_REQUEST,
                        "An application/graphql body must be UTF-8 text.",
                    ),
                ))
            }
        },
    };
    let graphql_request: async_graphql::Request = match parsed {
        Ok(r) => r,
        Err(e) => {
            return Err((
                ErrorKind::BadBody,
                error_response(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Expected a JSON body {{\"query\", \"variables\", \"operationName\"}}: {e}"
                    ),
                ),
            ))
        }
    };
    app.prepare(graphql_request, viewer, client)
        .map_err(|refused| (ErrorKind::Refused, refused_response(&refused)))
}

/// The answer as JSON, or, if it would pass `max_bytes`, a GraphQL error saying so (the
/// serializer stops writing at the limit).
pub fn serialize_capped(response: &async_graphql::Response, max_bytes: u64) -> Vec<u8> {
    let mut out = CappedWriter {
        bytes: Vec::new(),
        limit: usize::try_from(max_bytes).unwrap_or(usize::MAX),
    };
    if serde_json::to_writer(&mut out, response).is_ok() {
        return out.bytes;
    }
    let error = crate::backend::BackendError::too_large(max_bytes);
    serde_json::to_vec(&json!({
        "data": null,
        "errors": [{ "message": error.to_string(), "extensions": { "code": "RESPONSE_TOO_LARGE", "limit": max_bytes } }],
    }))
    .unwrap_or_default()
}

struct CappedWriter {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for CappedWriter {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(
                "the answer passed the response ceiling",
            ));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write(buf).map(drop)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
