//! The operation lifecycle of one connection: start (throttle, limits, cost, plan), the
//! admission run of a subscription, its move into a subscription group, results of the
//! operations the session runs itself, the end of an operation, token renewal from answers,
//! and membership re-checks.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::{Request, Response};
use mmsub_api::auth::Viewer;
use mmsub_api::backend::BackendError;
use mmsub_api::subscription_contract::ROOT_FIELD;
use mmsub_api::Admission;
use serde_json::{json, Value};

use super::{Active, Session};
use crate::delivery::Delivery;
use crate::dialect::Dialect;
use crate::groups::admission::Admitted;
use crate::groups::plan::{self, Plan};

impl Session {
    /// A token issued in an operation's answer on this socket (`tokenAuth`, `refreshToken`,
    /// `userGetToken`) for the connection's own user becomes the connection's token.
    pub(super) fn renew_from(&mut self, data: &async_graphql::Value) {
        let async_graphql::Value::Object(fields) = data else {
            return;
        };
        for field in fields.values() {
            let async_graphql::Value::Object(answer) = field else {
                continue;
            };
            let Some(async_graphql::Value::String(token)) = answer.get("token") else {
                continue;
            };
            let renewed = Viewer::from_token(self.gateway.jwt(), Some(token));
            let same_user = match (renewed.actor(), self.viewer.actor()) {
                (Some(new), Some(old)) => new.username == old.username,
                (Some(_), None) => matches!(self.viewer, Viewer::Anonymous),
                _ => false,
            };
            if same_user && renewed.expires_at() > self.viewer.expires_at() {
                self.viewer = renewed;
            }
        }
    }

    /// Checks, as the connection's user, that each channel of its live subscriptions still has
    /// it as a member. A backend that cannot answer (Mattermost down) revokes nothing.
    pub(super) fn start_recheck(&mut self) {
        let Some(actor) = self.viewer.actor().cloned() else {
            return;
        };
        let mut channels: Vec<String> = self
            .active
            .values()
            .filter_map(|a| match a {
                Active::Live { channel_id, .. } => Some(channel_id.clone()),
                Active::Running(_) => None,
            })
            .collect();
        channels.sort();
        channels.dedup();
        if channels.is_empty() {
            return;
        }
        let gateway = self.gateway.clone();
        self.recheck = Some(Box::pin(async move {
            let mut lost = Vec::new();
            for channel in channels {
                match gateway.member_channel(&actor, &channel).await {
                    Ok(_) => {}
                    Err(
                        BackendError::NotFound(_)
                        | BackendError::Forbidden(_)
                        | BackendError::Unauthorized(_),
                    ) => lost.push(channel),
                    Err(e) => {
                        tracing::debug!(error = %e, "membership re-check could not be answered");
                    }
                }
            }
            lost
        }));
    }

    /// Ends the live subscriptions of channels the user is no longer in, with an error that
    /// says so.
    pub(super) fn revoke(&mut self, lost: &[String]) {
        let revoked: Vec<String> = self
            .active
            .iter()
            .filter(
                |(_, a)| matches!(a, Active::Live { channel_id, .. } if lost.contains(channel_id)),
            )
            .map(|(id, _)| id.clone())
            .collect();
        for id in revoked {
            self.stop(&id);
            let error = json!({
                "message": "You are no longer a member of this channel: the subscription has ended.",
                "extensions": { "code": "NOT_FOUND", "statusCode": 404 },
            });
            self.send_operation_error(&id, vec![error]);
        }
    }

    /// Starts operation `id`, or answers why it cannot start.
    pub(crate) fn start(&mut self, id: String, request: Request) {
        let rate = self.gateway.settings().operation_rate;
        if let Err(retry) = self.operations.try_take(rate, Instant::now()) {
            let message = format!(
                "Too many operations on this connection: retry in {} seconds.",
                retry.secs()
            );
            let error = json!({ "message": message, "extensions": { "code": "TOO_MANY_REQUESTS", "retryAfter": retry.secs() } });
            self.send_operation_error(&id, vec![error]);
            return;
        }
        let limit = self.gateway.settings().max_subscriptions_per_connection;
        if self.active.len() >= limit {
            let message =
                format!("Too many subscriptions on this connection: the limit is {limit}");
            self.send_operation_error(&id, vec![json!({ "message": message })]);
            return;
        }
        let mut request = match self
            .gateway
            .prepare(request, self.viewer_now(), self.client)
        {
            Ok(request) => request,
            Err(refused) => {
                self.send_operation_error(&id, vec![refused.to_graphql()]);
                return;
            }
        };
        let (request, admission) = match plan::plan(&mut request) {
            Plan::NotOneRootField => {
                let message = "A subscription operation must select exactly one root field.";
                self.send_operation_error(&id, vec![json!({ "message": message })]);
                return;
            }
            Plan::FragmentRoot => {
                let message = format!("A subscription must select {ROOT_FIELD} as its root field itself, not through a fragment.");
                self.send_operation_error(&id, vec![json!({ "message": message })]);
                return;
            }
            Plan::Alone => (request, None),
            Plan::Shared(key) => {
                let admission = self.gateway.admission(
                    key,
                    &request,
                    Delivery::prefix_for(self.dialect, &id),
                    self.deliveries.outbox().clone(),
                );
                let as_data: Arc<dyn Admission> = admission.clone();
                (request.data(as_data), Some(admission))
            }
        };
        let results = match admission {
            Some(_) => self.gateway.run_admission(request),
            None => self.gateway.run_alone(request),
        };
        self.running.insert(id.clone(), results);
        self.active.insert(id, Active::Running(admission));
        self.gauges.subscriptions(self.active.len());
    }

    /// Ends operation `id`, leaving its group if it joined one; false if there was none.
    pub(crate) fn stop(&mut self, id: &str) -> bool {
        self.running.remove(id);
        let stopped = self.active.remove(id).is_some();
        self.gauges.subscriptions(self.active.len());
        stopped
    }

    fn send_operation_error(&mut self, id: &str, errors: Vec<Value>) {
        match self.dialect {
            Dialect::TransportWs => self.send(Some(id), "error", Some(errors)),
            // subscriptions-transport-ws sends one error object.
            Dialect::Legacy => self.send(Some(id), "error", errors.into_iter().next()),
        }
    }

    pub(super) fn on_result(&mut self, id: &str, result: Option<Response>) {
        match result {
            // An operation that failed before producing data (validation, permission, membership)
            // gets the protocol's `error` and ends; the connection stays open.
            Some(response)
                if response.data == async_graphql::Value::Null && !response.errors.is_empty() =>
            {
                let errors = response
                    .errors
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                    .collect();
                self.send_operation_error(id, errors);
                self.stop(id);
            }
            Some(response) => {
                self.renew_from(&response.data);
                self.send(Some(id), self.dialect.data_type(), Some(&response));
            }
            // Admitted and replayed: from now on the group delivers.
            None => self.admitted(id),
        }
    }

    /// The admission run of `id` has ended: the member goes live (or the operation completes).
    fn admitted(&mut self, id: &str) {
        // Drop the finished run now rather than whenever the stream map next polls it.
        self.running.remove(id);
        match self.active.remove(id) {
            Some(Active::Running(Some(admission))) => match admission.go_live() {
                Some(Admitted { member, channel_id }) => {
                    self.active.insert(
                        id.to_owned(),
                        Active::Live {
                            _member: member,
                            channel_id,
                        },
                    );
                }
                None => self.send(Some(id), "complete", None::<()>),
            },
            _ => self.send(Some(id), "complete", None::<()>),
        }
        self.gauges.subscriptions(self.active.len());
    }
}
