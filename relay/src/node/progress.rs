//! Offsets owed and committed: per partition, the records forwarded and not yet acknowledged
//! by every addressed gateway. Only what every gateway acknowledged (or that went to a gateway
//! since gone) is committed, so a relay that crashes re-delivers instead of losing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Per partition: forwarded offsets not yet acknowledged by every addressed gateway.
#[derive(Default)]
pub(super) struct Progress {
    partitions: HashMap<i32, PartitionProgress>,
    /// Per gateway and partition, the offsets it was sent and has not acknowledged, in order.
    owed: HashMap<u64, HashMap<i32, VecDeque<i64>>>,
}

#[derive(Default)]
struct PartitionProgress {
    /// offset → gateways that still owe an ack.
    pending: BTreeMap<i64, usize>,
    /// One past the newest forwarded offset.
    next: Option<i64>,
    /// The offset committed last.
    committed: Option<i64>,
}

impl PartitionProgress {
    /// Where a successor should resume: the oldest unacknowledged offset, or past the newest.
    fn committable(&self) -> Option<i64> {
        self.pending.keys().next().copied().or(self.next)
    }
}

impl Progress {
    /// Newly assigned partitions resume at these committed offsets.
    pub(super) fn resume(&mut self, offsets: &[(i32, i64)]) {
        for (partition, offset) in offsets {
            self.partitions.entry(*partition).or_default().next = Some(*offset);
        }
    }

    /// The offset this assignment forwards next on `partition`, if known.
    pub(super) fn expected(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).and_then(|p| p.next)
    }

    /// Per partition owned, the offset forwarded next.
    pub(super) fn positions(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter_map(|(partition, p)| p.next.map(|next| (*partition, next)))
            .collect()
    }

    pub(super) fn forwarded(&mut self, partition: i32, offset: i64, gateways: &[u64]) {
        let progress = self.partitions.entry(partition).or_insert_with(|| {
            tracing::info!(partition, offset, "forwarding a partition from this offset");
            PartitionProgress::default()
        });
        progress.next = Some(offset + 1);
        if gateways.is_empty() {
            return;
        }
        progress.pending.insert(offset, gateways.len());
        for id in gateways {
            self.owed
                .entry(*id)
                .or_default()
                .entry(partition)
                .or_default()
                .push_back(offset);
        }
    }

    pub(super) fn settle(&mut self, partition: i32, offset: i64) {
        if let Some(progress) = self.partitions.get_mut(&partition) {
            if let Some(remaining) = progress.pending.get_mut(&offset) {
                *remaining -= 1;
                if *remaining == 0 {
                    progress.pending.remove(&offset);
                }
            }
        }
    }

    /// Gateway `id` delivered everything of `partition` up to `offset`.
    pub(super) fn acked(&mut self, id: u64, partition: i32, offset: i64) {
        let mut settled = Vec::new();
        if let Some(owed) = self.owed.get_mut(&id).and_then(|p| p.get_mut(&partition)) {
            while owed.front().is_some_and(|o| *o <= offset) {
                settled.extend(owed.pop_front());
            }
        }
        for offset in settled {
            self.settle(partition, offset);
        }
    }

    /// Gateway `id` is gone: nothing it was sent holds commits back any more.
    pub(super) fn gone(&mut self, id: u64) {
        for (partition, offsets) in self.owed.remove(&id).unwrap_or_default() {
            for offset in offsets {
                self.settle(partition, offset);
            }
        }
    }

    /// Partitions whose committable offset moved since the last commit; with `revoking`, those
    /// partitions whatever was committed before (an asynchronous commit may have failed, and
    /// this is the last chance to tell a successor where to resume).
    pub(super) fn take_commits(&mut self, revoking: Option<&HashSet<i32>>) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (partition, progress) in &mut self.partitions {
            if revoking.is_some_and(|revoking| !revoking.contains(partition)) {
                continue;
            }
            if let Some(offset) = progress.committable() {
                if revoking.is_some() || progress.committed != Some(offset) {
                    progress.committed = Some(offset);
                    out.push((*partition, offset));
                }
            }
        }
        out
    }

    pub(super) fn forget(&mut self, partitions: &HashSet<i32>) {
        self.partitions.retain(|p, _| !partitions.contains(p));
        for owed in self.owed.values_mut() {
            owed.retain(|p, _| !partitions.contains(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_oldest_unacknowledged_record() {
        let mut progress = Progress::default();
        progress.forwarded(0, 10, &[1, 2]);
        progress.forwarded(0, 11, &[]);
        progress.forwarded(0, 12, &[1]);
        assert_eq!(progress.take_commits(None), vec![(0, 10)]);
        progress.acked(1, 0, 12);
        assert_eq!(progress.take_commits(None), vec![]); // gateway 2 still owes offset 10
        progress.gone(2);
        assert_eq!(progress.take_commits(None), vec![(0, 13)]);
        progress.forget(&HashSet::from([0]));
        assert!(progress.take_commits(None).is_empty());
    }

    #[test]
    fn revoking_commits_again_what_an_earlier_commit_may_have_lost() {
        let mut progress = Progress::default();
        progress.forwarded(0, 10, &[1]);
        progress.forwarded(1, 20, &[1]);
        assert_eq!(progress.take_commits(None).len(), 2);
        // Nothing moved, but the asynchronous commit above may have failed.
        assert_eq!(
            progress.take_commits(Some(&HashSet::from([0]))),
            vec![(0, 10)]
        );
    }
}
