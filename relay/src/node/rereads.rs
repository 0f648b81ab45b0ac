//! Gaps read again: a record whose predecessor has not arrived makes the relay read its
//! partition again from the missing offset, a few times, before it goes on without.

use std::collections::HashMap;
use std::time::Duration;

/// A partition's offsets are consecutive (the topic is neither compacted nor transactional), so
/// a record whose predecessor has not arrived means the fetch raced the write of that
/// predecessor (tansu's memory storage can show offset n+1 before n). The relay reads the
/// partition again from the missing offset, up to this many times, before it goes on without.
pub(super) const MAX_REREADS: u32 = 5;
/// Pause before reading again, so the missing record has been written.
pub(super) const REREAD_DELAY: Duration = Duration::from_millis(20);

/// Waits [`REREAD_DELAY`], then sends `consumer` back to `from` on `partition`: how both the
/// consume loop and a catch-up read a gap again.
pub(super) async fn read_again_from<C, X>(consumer: &C, topic: &str, partition: i32, from: i64)
where
    C: rdkafka::consumer::Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
{
    tokio::time::sleep(REREAD_DELAY).await;
    if let Err(e) = consumer.seek(
        topic,
        partition,
        rdkafka::Offset::Offset(from),
        Duration::from_secs(1),
    ) {
        tracing::warn!(partition, from, error = %e, "seeking back failed");
    }
}

/// What to do with a consumed record, given the offset its partition expects next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    Forward,
    /// Forwarded already in this assignment (read again after a seek back).
    AlreadyForwarded,
    /// Its predecessor is missing: seek back to `from` (attempt `attempt` of [`MAX_REREADS`]).
    ReadAgain {
        from: i64,
        attempt: u32,
    },
}

/// Per partition: the missing offset being read again, and how often it was.
#[derive(Default)]
pub(super) struct Rereads(HashMap<i32, (i64, u32)>);

impl Rereads {
    pub(super) fn next(&mut self, partition: i32, offset: i64, expected: Option<i64>) -> Next {
        match expected {
            Some(expected) if offset < expected => Next::AlreadyForwarded,
            Some(expected) if offset > expected => {
                let (at, attempts) = self.0.entry(partition).or_insert((expected, 0));
                if *at != expected {
                    *at = expected;
                    *attempts = 0;
                }
                if *attempts < MAX_REREADS {
                    *attempts += 1;
                    return Next::ReadAgain {
                        from: expected,
                        attempt: *attempts,
                    };
                }
                tracing::error!(
                    partition,
                    offset,
                    expected,
                    "records are missing from the partition after reading it again; going on without them"
                );
                self.0.remove(&partition);
                Next::Forward
            }
            _ => {
                self.0.remove(&partition);
                Next::Forward
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_record_is_read_again_a_few_times_and_a_repeat_is_not_forwarded() {
        let mut rereads = Rereads::default();
        assert_eq!(rereads.next(0, 7, Some(7)), Next::Forward);
        assert_eq!(rereads.next(0, 5, Some(8)), Next::AlreadyForwarded);
        for attempt in 1..=MAX_REREADS {
            assert_eq!(
                rereads.next(0, 9, Some(8)),
                Next::ReadAgain { from: 8, attempt }
            );
        }
        // Still missing after every attempt: go on without it.
        assert_eq!(rereads.next(0, 9, Some(8)), Next::Forward);
        // A later gap gets its own attempts; the first record of an assignment has no
        // expectation unless the committed offset was known.
        assert_eq!(
            rereads.next(0, 12, Some(10)),
            Next::ReadAgain {
                from: 10,
                attempt: 1
            }
        );
        assert_eq!(rereads.next(1, 40, None), Next::Forward);
    }
}
