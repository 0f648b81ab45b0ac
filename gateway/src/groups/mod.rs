//! Subscription groups: subscribers whose payloads are identical share one rendering.
//!
//! Every subscriber of a channel that selected the same fields with the same arguments (the
//! [`key`]) belongs to one group. A group listens to its channel on the fan-out hub, runs the
//! subscription's GraphQL delivery once per event, serializes the response once, and hands each
//! member's connection [`Outbox`] a delivery: the member's pre-built frame prefix plus the
//! shared payload bytes. Per subscriber and event that is one socket write from this task when
//! the connection is idle, or two reference-count increments and a queue push when it is busy;
//! no JSON work and no copy of the payload until the bytes are written to the socket.
//!
//! A member joins *held*: while its admission run replays history, live deliveries wait in the
//! member's own buffer (counted against its connection's budget). [`MemberHandle::go_live`]
//! sends what waited, minus what the replay already sent, and from then on deliveries go
//! straight to the connection. Dropping the handle leaves the group; the last member to leave
//! stops the group and its hub listener.

pub mod admission;
pub mod plan;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use async_graphql::Request;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use mmsub_api::{GroupFeed, MmsubSchema, Resume};
use mmsub_events::{Arrival, FanoutHub, MessageEvent};
use mmsub_metrics::Metrics;
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use plan::GroupKey;

/// Every group of this node, by key.
pub struct SubscriptionGroups {
    schema: MmsubSchema,
    hub: Arc<FanoutHub>,
    metrics: Arc<Metrics>,
    groups: Mutex<HashMap<GroupKey, Arc<Group>>>,
    /// Members past their admission: receiving live events.
    live: AtomicUsize,
}

struct Group {
    key: GroupKey,
    members: Mutex<Members>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Members {
    next_id: u64,
    list: Vec<Member>,
}

struct Member {
    id: u64,
    prefix: Bytes,
    outbox: Arc<Outbox>,
    /// `Some` until the member goes live: deliveries that arrived meanwhile, with their events.
    held: Option<Vec<(Arrival, Bytes)>>,
    /// After a resume goes live, what the subscriber holds (see [`Resume::holds`]), which may
    /// still arrive live: skipped until the first event it does not hold.
    resume: Option<Resume>,
}

/// A subscription's place in its group. Dropping it leaves the group.
pub struct MemberHandle {
    groups: Arc<SubscriptionGroups>,
    group: Arc<Group>,
    id: u64,
}

impl SubscriptionGroups {
    /// No groups yet; each starts on the hub with its first member.
    pub fn new(schema: MmsubSchema, hub: Arc<FanoutHub>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            schema,
            hub,
            metrics,
            groups: Mutex::new(HashMap::new()),
            live: AtomicUsize::new(0),
        })
    }

    /// Live subscriptions in all groups: admitted, replayed, and receiving new events (in a
    /// cluster, confirmed by the relays), so a client counting them knows a message sent now
    /// reaches them all.
    pub fn member_count(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Resolves once the channel's new events reach this node (see [`FanoutHub::ready`]).
    pub fn ready(
        &self,
        channel_id: &str,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        self.hub.ready(channel_id)
    }

    /// Groups running now: payloads rendered per event on this node.
    pub fn group_count(&self) -> usize {
        self.groups.lock().expect("groups lock poisoned").len()
    }

    /// Adds a held member to the group of `key`, starting the group on `channel_id` if it is
    /// new. `delivery_request` builds the group's delivery run (any member's request will do:
    /// equal keys render equal payloads). Must be called inside the Tokio runtime.
    pub fn join(
        self: &Arc<Self>,
        key: GroupKey,
        channel_id: &str,
        delivery_request: impl FnOnce() -> Request,
        prefix: Bytes,
        outbox: Arc<Outbox>,
    ) -> MemberHandle {
        let mut groups = self.groups.lock().expect("groups lock poisoned");
        let group = groups
            .entry(key)
            .or_insert_with_key(|key| self.start_group(key.clone(), channel_id, delivery_request()))
            .clone();
        // Still under the map lock: a concurrent last `leave` cannot stop this group now.
        let id = {
            let mut members = group.members.lock().expect("group lock poisoned");
            let id = members.next_id;
            members.next_id += 1;
            members.list.push(Member {
                id,
                prefix,
                outbox,
                held: Some(Vec::new()),
                resume: None,
            });
            id
        };
        drop(groups);
        MemberHandle {
            groups: self.clone(),
            group,
            id,
        }
    }

    fn start_group(&self, key: GroupKey, channel_id: &str, request: Request) -> Arc<Group> {
        let group = Arc::new(Group {
            key,
            members: Mutex::new(Members::default()),
            stop: CancellationToken::new(),
            metrics: self.metrics.clone(),
        });
        self.metrics.ws.groups(1);
        // Listening starts now, before the member's admission reads history.
        let mut events = self.hub.subscribe(channel_id);
        let next = Arc::new(NextEvent::default());
        let mut results = self
            .schema
            .execute_stream(request.data(GroupFeed::new(next.clone().stream())));
        let running = group.clone();
        tokio::spawn(async move {
            // One waiter for the whole run: a fresh `cancelled()` per await would register and
            // unregister one (a lock each) per event.
            let stopped = running.stop.clone().cancelled_owned();
            tokio::pin!(stopped);
            loop {
                let event = tokio::select! {
                    biased;
                    () = &mut stopped => return,
                    event = events.next() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                // The delivery run renders exactly the event handed to it: each payload is
                // published with its own event, never matched up by order.
                next.hand(event.event.clone());
                // The rendering is usually ready at once (the payload's fields are in the
                // event); wait for it, and for the stop, only when it is not.
                let rendered = match results.next().now_or_never() {
                    Some(rendered) => rendered,
                    None => tokio::select! {
                        biased;
                        () = &mut stopped => return,
                        rendered = results.next() => rendered,
                    },
                };
                let Some(response) = rendered else { return };
                match serde_json::to_vec(&response) {
                    Ok(payload) => running.publish(&event, Bytes::from(payload)),
                    Err(e) => {
                        tracing::error!(error = %e, "a subscription payload did not serialize");
                    }
                }
            }
        });
        group
    }

    fn leave(&self, group: &Arc<Group>, id: u64) {
        let mut groups = self.groups.lock().expect("groups lock poisoned");
        let mut members = group.members.lock().expect("group lock poisoned");
        let Some(at) = members.list.iter().position(|m| m.id == id) else {
            return;
        };
        let member = members.list.swap_remove(at);
        if member.held.is_none() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        for _ in member.held.iter().flatten() {
            member.outbox.unreserve();
        }
        if members.list.is_empty() {
            if groups
                .get(&group.key)
                .is_some_and(|g| Arc::ptr_eq(g, group))
            {
                groups.remove(&group.key);
            }
            if !group.stop.is_cancelled() {
                self.metrics.ws.groups(-1);
            }
            group.stop.cancel();
        }
    }
}

impl Group {
    /// Hands one event's payload to every member, and counts what the connections took (written
    /// now, or queued within their send budget) once for the event, not once per member.
    fn publish(&self, event: &Arrival, payload: Bytes) {
        let mut members = self.members.lock().expect("group lock poisoned");
        let mut taken = 0;
        for member in &mut members.list {
            match &mut member.held {
                None => {
                    if let Some(resume) = &member.resume {
                        if resume.holds(&event.post.id, event.post.create_at) {
                            continue;
                        }
                        member.resume = None;
                    }
                    // On overflow the connection is closing with "slow consumer"; see outbox.
                    taken += u64::from(member.outbox.push(&member.prefix, &payload));
                }
                Some(held) => {
                    if member.outbox.reserve() {
                        held.push((event.clone(), payload.clone()));
                    }
                }
            }
        }
        drop(members);
        self.metrics.ws.delivered(taken, event.at.elapsed());
        tracing::debug!(post = %event.post.id, request_id = event.request_id.as_deref(), subscribers = taken, "delivered");
    }
}

impl MemberHandle {
    /// Ends the hold: sends what arrived during admission, except what a resume holds.
    pub fn go_live(&self, resume: Option<Resume>) {
        let mut members = self.group.members.lock().expect("group lock poisoned");
        let Some(member) = members.list.iter_mut().find(|m| m.id == self.id) else {
            return;
        };
        let Some(held) = member.held.take() else {
            return;
        };
        self.groups.live.fetch_add(1, Ordering::AcqRel);
        let mut taken = 0;
        let oldest = held.first().map(|(event, _)| event.at);
        for (event, payload) in held {
            // The room held for it is given back; a delivery that has to queue claims its own.
            member.outbox.unreserve();
            if !resume
                .as_ref()
                .is_some_and(|r| r.holds(&event.post.id, event.post.create_at))
            {
                taken += u64::from(member.outbox.push(&member.prefix, &payload));
            }
        }
        member.resume = resume;
        drop(members);
        if let Some(oldest) = oldest {
            // Held through the admission: counted from the oldest's arrival, an upper bound.
            self.group.metrics.ws.delivered(taken, oldest.elapsed());
        }
    }
}

impl Drop for MemberHandle {
    fn drop(&mut self) {
        self.groups.leave(&self.group, self.id);
    }
}

/// The one event a group's delivery run renders next: the group's task hands it over, then
/// polls the run, which takes it. Only that task polls the run, and only right after handing
/// an event, so the feed never waits and needs no waker.
#[derive(Default)]
struct NextEvent(Mutex<Option<Arc<MessageEvent>>>);

impl NextEvent {
    fn hand(&self, event: Arc<MessageEvent>) {
        *self.0.lock().expect("next event lock poisoned") = Some(event);
    }

    /// The delivery run's feed.
    fn stream(self: Arc<Self>) -> impl futures::Stream<Item = Arc<MessageEvent>> + Send {
        futures::stream::poll_fn(move |_| {
            match self.0.lock().expect("next event lock poisoned").take() {
                Some(event) => Poll::Ready(Some(event)),
                // Not reached (see above); pending rather than ending the run.
                None => Poll::Pending,
            }
        })
    }
}
