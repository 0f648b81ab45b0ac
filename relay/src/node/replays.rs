//! Partitions read again for gateways that missed part of them.
//!
//! A gateway misses events when its link drops (a partition, a heartbeat timeout, a slow
//! gateway disconnected) or when a partition moves to this relay from one that committed past
//! what the gateway had: the relay settles a gone gateway's records so that one lost node
//! cannot hold every commit back. Kafka still has those records, so nothing is lost: when the
//! gateway says how far it has each partition (its `Hello`, and its acknowledgements), the
//! relay seeks the partition back to the first offset the gateway lacks and reads it again,
//! sending the records of the channels that gateway watches to that gateway only. Nothing newer
//! on that partition is forwarded to anyone until the read reaches where it was, so every
//! gateway still gets the partition in offset order.
//!
//! Records read again are not counted as forwarded: commits are unchanged, and a relay that
//! dies mid-replay leaves the gateway's marks where they were, so the next owner replays again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A replay that reads nothing for this long (the offset fell out of the topic's retention and
/// the broker reset the position past it) is given up: the partition is read on from where it
/// was, and the gap is logged.
pub(super) const GIVE_UP: Duration = Duration::from_secs(5);

/// What to do with a consumed record, given the partition's replays.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Replayed {
    /// No replay on this partition: the record is handled as usual.
    No,
    /// A record read again: send it to these gateways (those watching its channel), and to
    /// nobody else.
    To(Vec<u64>),
    /// Fetched before the seek took effect: dropped, it will be read again after the replay.
    Early,
    /// The seek never took effect: seek to this offset (where the partition was) and go on.
    GiveUp {
        /// Where the partition resumes.
        resume: i64,
    },
}

struct Replay {
    /// Where the partition was when the replay began: the first offset not yet forwarded.
    until: i64,
    /// The offset the consumer was sent back to.
    seek: i64,
    /// The newest offset read again so far.
    position: Option<i64>,
    /// When the seek was made or the last record read again arrived.
    since: Instant,
    /// Gateway → the first offset it lacks.
    gateways: HashMap<u64, i64>,
}

/// Every replay in progress, by partition.
#[derive(Default)]
pub(super) struct Replays(HashMap<i32, Replay>);

impl Replays {
    /// Gateway `gateway` has `partition` up to `delivered`, and the relay forwards `next` on
    /// it next. Returns the offset to seek the partition to, when the consumer must go back.
    pub(super) fn request(
        &mut self,
        partition: i32,
        gateway: u64,
        delivered: i64,
        next: i64,
    ) -> Option<i64> {
        let from = delivered.saturating_add(1).max(0);
        if from >= next {
            return None;
        }
        let replay = self.0.entry(partition).or_insert_with(|| Replay {
            until: next,
            seek: from,
            position: None,
            since: Instant::now(),
            gateways: HashMap::new(),
        });
        let wants = replay.gateways.entry(gateway).or_insert(from);
        *wants = (*wants).min(from);
        let read_past_it = replay.position.map_or(from < replay.seek, |at| from <= at);
        if read_past_it || replay.gateways.len() == 1 && replay.position.is_none() {
            // Another gateway's replay already read past `from`: go back further (the others
            // drop what they have by offset).
            replay.seek = replay.seek.min(from);
            replay.position = None;
            replay.since = Instant::now();
            return Some(replay.seek);
        }
        None
    }

    /// A record of `partition` at `offset` was consumed.
    pub(super) fn record(&mut self, partition: i32, offset: i64) -> Replayed {
        let Some(replay) = self.0.get_mut(&partition) else {
            return Replayed::No;
        };
        if offset >= replay.until {
            // Offsets are consecutive, so the read is not done before `until - 1`: this was
            // fetched before the seek took effect, or the seek did not land.
            if replay.since.elapsed() > GIVE_UP {
                let resume = replay.until;
                tracing::error!(
                    partition,
                    from = replay.seek,
                    at = ?replay.position,
                    resume,
                    "a partition could not be read again (its records left the topic's retention?): gateways may miss what they lacked"
                );
                self.0.remove(&partition);
                return Replayed::GiveUp { resume };
            }
            return Replayed::Early;
        }
        replay.since = Instant::now();
        replay.position = Some(offset);
        let to = replay
            .gateways
            .iter()
            .filter(|(_, from)| **from <= offset)
            .map(|(id, _)| *id)
            .collect();
        if offset + 1 == replay.until {
            self.0.remove(&partition);
        }
        Replayed::To(to)
    }

    /// Whether `gateway` is still owed part of `partition` (no `Sent` mark may pass it).
    pub(super) fn owes(&self, partition: i32, gateway: u64) -> bool {
        self.0
            .get(&partition)
            .is_some_and(|r| r.gateways.contains_key(&gateway))
    }

    /// The gateway is gone; the read goes on (the consumer is behind) but sends it nothing.
    pub(super) fn gone(&mut self, gateway: u64) {
        for replay in self.0.values_mut() {
            replay.gateways.remove(&gateway);
        }
    }

    /// Partitions revoked from this relay: their replays are the next owner's.
    pub(super) fn forget(&mut self, partitions: &std::collections::HashSet<i32>) {
        self.0.retain(|p, _| !partitions.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_behind_gets_exactly_what_it_lacks_then_the_partition_goes_on() {
        let mut replays = Replays::default();
        // Up to date, or never had anything of it: nothing to read again.
        assert_eq!(replays.request(0, 1, 9, 10), None);
        assert!(!replays.owes(0, 1));
        // Gateway 1 has up to 5; the relay is at 10.
        assert_eq!(replays.request(0, 1, 5, 10), Some(6));
        assert!(replays.owes(0, 1));
        // A record fetched before the seek took effect.
        assert_eq!(replays.record(0, 10), Replayed::Early);
        for offset in 6..10 {
            assert_eq!(replays.record(0, offset), Replayed::To(vec![1]));
        }
        // Caught up: the partition is forwarded as usual again.
        assert!(!replays.owes(0, 1));
        assert_eq!(replays.record(0, 10), Replayed::No);
    }

    #[test]
    fn a_second_gateway_further_behind_sends_the_read_back_again() {
        let mut replays = Replays::default();
        assert_eq!(replays.request(3, 1, 7, 20), Some(8));
        assert_eq!(replays.record(3, 8), Replayed::To(vec![1]));
        assert_eq!(replays.record(3, 9), Replayed::To(vec![1]));
        // Gateway 2 lacks from 12: the read is not there yet, so it just joins.
        assert_eq!(replays.request(3, 2, 11, 20), None);
        // Gateway 3 lacks from 4: back again.
        assert_eq!(replays.request(3, 3, 3, 20), Some(4));
        let mut to = match replays.record(3, 4) {
            Replayed::To(to) => to,
            other => panic!("{other:?}"),
        };
        to.sort_unstable();
        assert_eq!(to, vec![3]);
        let Replayed::To(mut to) = replays.record(3, 12) else {
            panic!()
        };
        to.sort_unstable();
        assert_eq!(to, vec![1, 2, 3]);
        replays.gone(2);
        let Replayed::To(mut to) = replays.record(3, 19) else {
            panic!()
        };
        to.sort_unstable();
        assert_eq!(to, vec![1, 3]);
        assert_eq!(replays.record(3, 20), Replayed::No);
    }

    #[test]
    fn a_seek_that_never_lands_is_given_up_where_the_partition_was() {
        let mut replays = Replays::default();
        assert_eq!(replays.request(1, 1, 0, 50), Some(1));
        replays.0.get_mut(&1).unwrap().since = Instant::now() - GIVE_UP * 2;
        assert_eq!(replays.record(1, 60), Replayed::GiveUp { resume: 50 });
        assert_eq!(replays.record(1, 50), Replayed::No);
    }
}
