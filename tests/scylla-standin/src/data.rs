//! A table's rows: partitions of clustered rows, cells with write timestamps and TTLs, and
//! tombstones, reconciled the way Cassandra does.
//!
//! Clustering keys are kept in an order-preserving byte encoding, so that a partition is a
//! `BTreeMap` in clustering order (descending columns included) and a slice of it is a range.
//!
//! Reconciliation (Cassandra's `Cells.reconcile`, and the CQL documentation's "Update
//! parameters": the write with the higher timestamp wins): when two writes of a cell carry the
//! same timestamp, a deletion (or an expired cell) wins over a live value, and between two
//! live values the greater value wins; a tombstone hides every write whose timestamp is not
//! greater than its own.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::schema::{Kind, TableSchema};

/// One write of one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// The write's timestamp, microseconds.
    pub timestamp: i64,
    /// When it expires, seconds on the stand-in's clock.
    pub expires_at: Option<i64>,
    /// The TTL it was written with.
    pub ttl: Option<i32>,
}

impl Cell {
    /// Live at `now` (not a tombstone, not expired).
    pub fn is_live(&self, now: i64) -> bool {
        self.value.is_some() && self.expires_at.is_none_or(|at| now < at)
    }

    /// The one of `self` and `other` that wins (see the module's docs).
    pub fn reconcile(self, other: Cell, now: i64) -> Cell {
        use std::cmp::Ordering;
        match self.timestamp.cmp(&other.timestamp) {
            Ordering::Greater => return self,
            Ordering::Less => return other,
            Ordering::Equal => {}
        }
        match (self.is_live(now), other.is_live(now)) {
            (true, false) => return other,
            (false, true) => return self,
            _ => {}
        }
        match self.value.cmp(&other.value) {
            Ordering::Greater => self,
            Ordering::Less => other,
            Ordering::Equal => {
                let expiry = |c: &Cell| c.expires_at.unwrap_or(i64::MAX);
                if expiry(&other) > expiry(&self) {
                    other
                } else {
                    self
                }
            }
        }
    }
}

/// A row: its liveness marker (from INSERT), its deletion, and its regular cells by column.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The clustering key's values, as bound.
    pub key: Vec<Vec<u8>>,
    /// The INSERT's row marker: keeps the row alive with no regular cell set.
    pub marker: Option<Cell>,
    /// A row tombstone's timestamp.
    pub deleted_at: Option<i64>,
    /// Regular cells by column index.
    pub cells: BTreeMap<usize, Cell>,
}

/// A partition: its key's values, its deletion, range tombstones, and rows in clustering order.
#[derive(Debug, Clone, Default)]
pub struct Partition {
    /// The partition key's values.
    pub key: Vec<Vec<u8>>,
    /// A partition tombstone's timestamp.
    pub deleted_at: Option<i64>,
    /// Deletions of clustering ranges.
    pub range_tombstones: Vec<(Slice, i64)>,
    /// Rows by encoded clustering key.
    pub rows: BTreeMap<Vec<u8>, Row>,
}

impl Partition {
    /// The newest deletion covering a row.
    fn deletion_of(&self, encoded: &[u8], row: &Row) -> Option<i64> {
        let ranges = self
            .range_tombstones
            .iter()
            .filter(|(slice, _)| slice.contains(encoded))
            .map(|(_, ts)| *ts);
        ranges.chain(self.deleted_at).chain(row.deleted_at).max()
    }

    /// A row as a read sees it at `now`: its live cells, or `None` if it is not alive.
    pub fn live_row(&self, encoded: &[u8], row: &Row, now: i64) -> Option<LiveRow> {
        let deleted = self.deletion_of(encoded, row);
        let survives =
            |cell: &Cell| cell.is_live(now) && deleted.is_none_or(|d| cell.timestamp > d);
        let cells: BTreeMap<usize, Cell> = row
            .cells
            .iter()
            .filter(|(_, cell)| survives(cell))
            .map(|(k, cell)| (*k, cell.clone()))
            .collect();
        let marked = row.marker.as_ref().is_some_and(survives);
        (marked || !cells.is_empty()).then_some(LiveRow { cells })
    }

    /// Drops what no read can see any more (expired cells and shadowed writes), as compaction
    /// would; keeps the map from growing without bound in long runs.
    pub fn purge(&mut self, now: i64) {
        let partition_deletion = self.deleted_at;
        let tombstones = self.range_tombstones.clone();
        self.rows.retain(|encoded, row| {
            let deleted = tombstones
                .iter()
                .filter(|(slice, _)| slice.contains(encoded))
                .map(|(_, ts)| *ts)
                .chain(partition_deletion)
                .chain(row.deleted_at)
                .max();
            let keeps = |cell: &Cell| {
                cell.expires_at.is_none_or(|at| now < at)
                    && deleted.is_none_or(|d| cell.timestamp > d)
            };
            row.cells
                .retain(|_, cell| keeps(cell) || cell.value.is_none());
            if row.marker.as_ref().is_some_and(|m| !keeps(m)) {
                row.marker = None;
            }
            row.marker.is_some() || row.cells.values().any(keeps) || row.deleted_at.is_some()
        });
    }
}

/// A row's live cells.
#[derive(Debug, Clone)]
pub struct LiveRow {
    /// Live cells by column index.
    pub cells: BTreeMap<usize, Cell>,
}

/// Encodes a partition key's values (each length-prefixed, as Cassandra's composite keys).
pub fn partition_bytes(values: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Encodes a clustering key prefix so that byte order is the table's clustering order.
pub fn clustering_bytes(table: &TableSchema, values: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (value, &index) in values.iter().zip(&table.clustering) {
        let column = &table.columns[index];
        let start = out.len();
        encode_component(&column.ty, value, &mut out);
        if column.descending {
            for b in &mut out[start..] {
                *b = !*b;
            }
        }
    }
    out
}

fn encode_component(ty: &crate::types::CqlType, value: &[u8], out: &mut Vec<u8>) {
    use crate::types::CqlType;
    match ty {
        CqlType::Bigint
        | CqlType::Timestamp
        | CqlType::Int
        | CqlType::Smallint
        | CqlType::Tinyint
            if !value.is_empty() =>
        {
            out.push(value[0] ^ 0x80);
            out.extend_from_slice(&value[1..]);
        }
        CqlType::Double | CqlType::Float if !value.is_empty() => {
            // IEEE 754 total order: flip every bit of a negative number, the sign bit of a
            // positive one.
            if value[0] & 0x80 == 0 {
                out.push(value[0] ^ 0x80);
                out.extend_from_slice(&value[1..]);
            } else {
                out.extend(value.iter().map(|b| !b));
            }
        }
        CqlType::Boolean | CqlType::Uuid | CqlType::Timeuuid => out.extend_from_slice(value),
        _ => {
            // Variable length: escape 0x00 as 0x00 0xff, end with 0x00 0x00, so that a
            // shorter value sorts before its extensions and components never run together.
            for &b in value {
                out.push(b);
                if b == 0 {
                    out.push(0xff);
                }
            }
            out.extend_from_slice(&[0, 0]);
        }
    }
}

/// `BTreeMap` range bounds over encoded keys.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A range of clustering keys in encoded order; bounds are key prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Start: keys from (or after) this prefix.
    pub start: Bound<Vec<u8>>,
    /// End: keys up to (or before) this prefix.
    pub end: Bound<Vec<u8>>,
}

impl Slice {
    /// Every key.
    pub fn all() -> Self {
        Slice {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// The keys with this prefix.
    pub fn prefix(prefix: Vec<u8>) -> Self {
        Slice {
            start: Bound::Included(prefix.clone()),
            end: Bound::Included(prefix),
        }
    }

    /// Whether an encoded key is inside.
    pub fn contains(&self, key: &[u8]) -> bool {
        use std::cmp::Ordering;
        let against = |prefix: &[u8]| key[..key.len().min(prefix.len())].cmp(prefix);
        let after_start = match &self.start {
            Bound::Unbounded => true,
            Bound::Included(p) => against(p) != Ordering::Less,
            Bound::Excluded(p) => against(p) == Ordering::Greater,
        };
        let before_end = match &self.end {
            Bound::Unbounded => true,
            Bound::Included(p) => against(p) != Ordering::Greater,
            Bound::Excluded(p) => against(p) == Ordering::Less,
        };
        after_start && before_end
    }

    /// The `BTreeMap` range bounds of this slice, `None` when it is empty.
    pub fn range(&self) -> Option<KeyRange> {
        let lower = match &self.start {
            Bound::Unbounded => Bound::Unbounded,
            Bound::Included(p) => Bound::Included(p.clone()),
            Bound::Excluded(p) => Bound::Included(successor(p)?),
        };
        let upper = match &self.end {
            Bound::Unbounded => Bound::Unbounded,
            Bound::Excluded(p) => Bound::Excluded(p.clone()),
            Bound::Included(p) => successor(p).map_or(Bound::Unbounded, Bound::Excluded),
        };
        let empty = match (&lower, &upper) {
            (Bound::Included(a), Bound::Excluded(b)) => a >= b,
            (Bound::Included(a), Bound::Included(b)) => a > b,
            _ => false,
        };
        (!empty).then_some((lower, upper))
    }

    /// The part of this slice after `key` (exclusive), in the read's direction.
    pub fn resume_after(&self, key: &[u8], reversed: bool) -> Slice {
        let mut slice = self.clone();
        if reversed {
            slice.end = Bound::Excluded(key.to_vec());
        } else {
            // Keys are full length here, so "after this key" is "from its successor".
            slice.start = successor(key).map_or(Bound::Excluded(key.to_vec()), Bound::Included);
        }
        slice
    }
}

/// The smallest byte string greater than every string with this prefix.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// A bound value, as the protocol carries it (spec section 4.1.4: `[value]` is a value, null,
/// or "not set").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Not set: leave the column as it is.
    Unset,
    /// Null: delete the cell.
    Null,
    /// A value.
    Value(Vec<u8>),
}

/// A table and its partitions, by encoded partition key.
#[derive(Debug, Clone)]
pub struct Table {
    /// Its definition.
    pub schema: TableSchema,
    /// Its data.
    pub partitions: BTreeMap<Vec<u8>, Partition>,
    /// Writes since the last purge of expired and shadowed data.
    pub writes_since_purge: u32,
}

/// Writes one row: `row` has one entry per column (keys must be values). Sets the row marker
/// when `marker` (INSERT does, UPDATE does not).
pub fn upsert(
    table: &mut Table,
    row: &[Write],
    timestamp: i64,
    ttl: Option<i32>,
    marker: bool,
    now: i64,
) {
    let schema = &table.schema;
    let value = |index: usize| match &row[index] {
        Write::Value(v) => v.clone(),
        _ => Vec::new(),
    };
    let pk: Vec<Vec<u8>> = schema.partition_key.iter().map(|&i| value(i)).collect();
    let ck: Vec<Vec<u8>> = schema.clustering.iter().map(|&i| value(i)).collect();
    let encoded = clustering_bytes(schema, &ck);
    let ttl = ttl.filter(|t| *t > 0);
    let expires_at = ttl.map(|t| now + i64::from(t));
    let regular: Vec<(usize, Cell)> = schema
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == Kind::Regular)
        .filter_map(|(i, _)| match &row[i] {
            Write::Unset => None,
            Write::Null => Some((
                i,
                Cell {
                    value: None,
                    timestamp,
                    expires_at: None,
                    ttl: None,
                },
            )),
            Write::Value(v) => Some((
                i,
                Cell {
                    value: Some(v.clone()),
                    timestamp,
                    expires_at,
                    ttl,
                },
            )),
        })
        .collect();
    let partition = table
        .partitions
        .entry(partition_bytes(&pk))
        .or_insert_with(|| Partition {
            key: pk,
            ..Partition::default()
        });
    let target = partition.rows.entry(encoded).or_insert_with(|| Row {
        key: ck,
        ..Row::default()
    });
    if marker {
        let new = Cell {
            value: Some(Vec::new()),
            timestamp,
            expires_at,
            ttl,
        };
        target.marker = Some(match target.marker.take() {
            Some(old) => old.reconcile(new, now),
            None => new,
        });
    }
    for (index, cell) in regular {
        let merged = match target.cells.remove(&index) {
            Some(old) => old.reconcile(cell, now),
            None => cell,
        };
        target.cells.insert(index, merged);
    }
    table.writes_since_purge += 1;
    if table.writes_since_purge >= 256 {
        table.writes_since_purge = 0;
        for partition in table.partitions.values_mut() {
            partition.purge(now);
        }
    }
}

/// Deletes the rows under a partition and a clustering prefix (empty: the whole partition).
pub fn delete_prefix(table: &mut Table, pk: &[Vec<u8>], ck: &[Vec<u8>], timestamp: i64) {
    let full_row = ck.len() == table.schema.clustering.len();
    let encoded = clustering_bytes(&table.schema, ck);
    let partition = table
        .partitions
        .entry(partition_bytes(pk))
        .or_insert_with(|| Partition {
            key: pk.to_vec(),
            ..Partition::default()
        });
    if ck.is_empty() {
        partition.deleted_at = partition.deleted_at.max(Some(timestamp));
    } else if full_row {
        let row = partition.rows.entry(encoded).or_insert_with(|| Row {
            key: ck.to_vec(),
            ..Row::default()
        });
        row.deleted_at = row.deleted_at.max(Some(timestamp));
    } else {
        partition
            .range_tombstones
            .push((Slice::prefix(encoded), timestamp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(value: &[u8], timestamp: i64) -> Cell {
        Cell {
            value: Some(value.to_vec()),
            timestamp,
            expires_at: None,
            ttl: None,
        }
    }

    #[test]
    fn the_higher_timestamp_wins_whatever_the_order() {
        let (old, new) = (cell(b"z", 1), cell(b"a", 2));
        assert_eq!(old.clone().reconcile(new.clone(), 0), new);
        assert_eq!(new.clone().reconcile(old, 0), new);
    }

    #[test]
    fn on_a_tie_a_deletion_wins_then_the_greater_value() {
        let tombstone = Cell {
            value: None,
            ..cell(b"", 5)
        };
        assert_eq!(cell(b"a", 5).reconcile(tombstone.clone(), 0), tombstone);
        assert_eq!(cell(b"a", 5).reconcile(cell(b"b", 5), 0), cell(b"b", 5));
        assert_eq!(cell(b"b", 5).reconcile(cell(b"a", 5), 0), cell(b"b", 5));
    }

    #[test]
    fn slices_bound_by_prefix() {
        let slice = Slice {
            start: Bound::Excluded(vec![1]),
            end: Bound::Included(vec![3]),
        };
        assert!(!slice.contains(&[1, 9]));
        assert!(slice.contains(&[2, 0]));
        assert!(slice.contains(&[3, 0xff]));
        assert!(!slice.contains(&[4]));
        let (lower, upper) = slice.range().unwrap();
        assert_eq!(lower, Bound::Included(vec![2]));
        assert_eq!(upper, Bound::Excluded(vec![4]));
        let empty = Slice {
            start: Bound::Excluded(vec![3]),
            end: Bound::Excluded(vec![3]),
        };
        assert!(empty.range().is_none());
    }
}
