//! The gateway's side of a subscriber's admission run ([`mmsub_api::Admission`]).
//!
//! A [`GroupAdmission`] belongs to one `subscribe` operation of one connection, which holds it
//! while the schema runs the admission (the run holds the other reference, as request data).
//! When the resolver finds the subscriber a member it calls `join`: the subscriber joins its
//! group *held*, and the future resolves once the channel's events reach this node. The
//! resolver then reports, for a resume, what the subscriber holds. When the run ends, the
//! operation calls [`GroupAdmission::go_live`]: the member receives what arrived meanwhile,
//! minus what it holds.

use std::sync::{Arc, Mutex};

use async_graphql::Request;
use bytes::Bytes;
use futures::future::BoxFuture;
use mmsub_api::Resume;

use super::plan::GroupKey;
use super::{MemberHandle, SubscriptionGroups};
use crate::outbox::Outbox;

/// One subscriber's way into its group.
pub struct GroupAdmission {
    groups: Arc<SubscriptionGroups>,
    key: GroupKey,
    /// The subscriber's request, in case it starts the group's delivery run (equal keys
    /// render equal payloads, so any member's request will do).
    request: (String, Option<String>, async_graphql::Variables),
    /// The subscriber's delivery prefix and its connection's outbox.
    prefix: Bytes,
    outbox: Arc<Outbox>,
    outcome: Mutex<Outcome>,
}

#[derive(Default)]
struct Outcome {
    /// The group joined and its channel, once the resolver found the subscriber a member.
    member: Option<(MemberHandle, String)>,
    /// What a resuming subscriber holds after its replay; `None` when it did not resume.
    resume: Option<Resume>,
}

/// A subscription that passed admission: a live group member of a channel.
pub struct Admitted {
    /// Its place in the group; dropping it leaves.
    pub member: MemberHandle,
    /// The channel it receives.
    pub channel_id: String,
}

impl GroupAdmission {
    /// The admission of a subscriber whose deliveries start with `prefix` and go to `outbox`.
    pub fn new(
        groups: Arc<SubscriptionGroups>,
        key: GroupKey,
        request: &Request,
        prefix: Bytes,
        outbox: Arc<Outbox>,
    ) -> Arc<Self> {
        Arc::new(Self {
            groups,
            key,
            request: (
                request.query.clone(),
                request.operation_name.clone(),
                request.variables.clone(),
            ),
            prefix,
            outbox,
            outcome: Mutex::new(Outcome::default()),
        })
    }

    /// The admission run has ended: the member goes live, or `None` if it never joined (the
    /// run failed before, or ended without finding a channel).
    pub fn go_live(&self) -> Option<Admitted> {
        let Outcome { member, resume } =
            std::mem::take(&mut *self.outcome.lock().expect("admission lock poisoned"));
        let (member, channel_id) = member?;
        member.go_live(resume);
        Some(Admitted { member, channel_id })
    }
}

impl mmsub_api::Admission for GroupAdmission {
    fn join(&self, channel_id: &str) -> BoxFuture<'static, Result<(), String>> {
        let (query, operation_name, variables) = &self.request;
        let delivery_request = || {
            let request = Request::new(query.clone()).variables(variables.clone());
            match operation_name {
                Some(name) => request.operation_name(name.clone()),
                None => request,
            }
        };
        let member = self.groups.join(
            self.key.clone(),
            channel_id,
            delivery_request,
            self.prefix.clone(),
            self.outbox.clone(),
        );
        // A second join (the resolver calls it once) would replace, and so leave, the first.
        self.outcome.lock().expect("admission lock poisoned").member =
            Some((member, channel_id.to_owned()));
        self.groups.ready(channel_id)
    }

    fn resumed(&self, resume: Resume) {
        self.outcome.lock().expect("admission lock poisoned").resume = Some(resume);
    }
}
