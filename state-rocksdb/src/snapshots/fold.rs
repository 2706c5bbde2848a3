//! The net effect of a changelog segment's writes ([`crate::snapshots::changelog`]):
//! each key's last write, in key order, which is what a segment's SST files
//! hold.
//!
//! Replaying a segment's writes one by one at restore cost a memtable
//! insert per write (docs/BENCHMARKS.md). Folding them in the checkpoint's
//! asynchronous phase leaves one write per key, sorted, which an
//! `SstFileWriter` writes as a file RocksDB ingests whole at restore.
//!
//! The fold keeps what RocksDB would end up with:
//! - a put or removal replaces whatever came before for its key;
//! - an append extends a put before it (over a removal it becomes the put
//!   of its bytes: the merge operator concatenates onto nothing); appends
//!   with nothing before them stay appends, concatenated, and are merged
//!   into what older files hold;
//! - a range removal drops every earlier write in its range and is kept.
//!   Every point write left is later than any range removal covering it,
//!   so one file may hold both: all entries of an ingested file share one
//!   sequence number, and RocksDB lets a point entry win over a range
//!   tombstone of the same sequence number.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use streamstate_api::StateId;

use crate::write_path::pending_cells::WriteOp;

type FastHasher = foldhash::fast::RandomState;

/// The last write of one key, once folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NetWrite<'a> {
    /// The key holds this value: borrowed from its file (most writes,
    /// never copied) or built by appends.
    Put(Cow<'a, [u8]>),
    /// The key is removed.
    Remove,
    /// These bytes are appended to what the base holds for the key.
    Append(Vec<u8>),
}

/// One range removal: every key of `state` from `start` up to `end`
/// (exclusive), made after the writes numbered below `seq`.
#[derive(Debug, Clone, Copy)]
struct RangeRemoval<'a> {
    seq: u64,
    state: StateId,
    start: &'a [u8],
    end: &'a [u8],
}

impl RangeRemoval<'_> {
    fn covers(&self, state: StateId, key: &[u8]) -> bool {
        state == self.state && self.start <= key && key < self.end
    }
}

/// One key's last write so far.
#[derive(Debug)]
struct KeyWrite<'a> {
    state: StateId,
    /// [`sort_prefix`] of `key`, kept inline for the final sort.
    prefix: u64,
    key: &'a [u8],
    /// When it was made: orders it against range removals.
    seq: u64,
    write: NetWrite<'a>,
}

/// Folds writes of several pieces, borrowing their bytes; [`Self::finish`]
/// gives the net writes.
///
/// Each key's last write sits in a vector, found through a per-state hash
/// index of small entries, and the vector is sorted once at the end: a
/// `BTreeMap` searched by byte comparisons at every insert, and so waited
/// on memory, for the keys lie scattered over the pieces. The fold is
/// mostly cache misses: time the asynchronous phase can spend, a restore
/// cannot.
#[derive(Debug, Default)]
pub(crate) struct NetWrites<'a> {
    /// Writes added so far: orders point writes against range removals.
    seq: u64,
    /// Range removals in the order made.
    ranges: Vec<RangeRemoval<'a>>,
    /// Per state, where each key's write is in `writes`.
    index: Vec<HashMap<&'a [u8], usize, FastHasher>>,
    writes: Vec<KeyWrite<'a>>,
}

impl<'a> NetWrites<'a> {
    /// Room for about `keys` keys of one state without growing (each growth
    /// moves every entry).
    pub(crate) fn with_capacity(keys: usize) -> Self {
        Self {
            index: vec![HashMap::with_capacity_and_hasher(keys, FastHasher::default())],
            writes: Vec::with_capacity(keys),
            ..Self::default()
        }
    }

    /// Folds one write in, after every write added before it.
    pub(crate) fn add(&mut self, state: StateId, key: &'a [u8], op: WriteOp<'a>) {
        self.seq += 1;
        let seq = self.seq;
        if self.index.len() <= state {
            self.index.resize_with(state + 1, HashMap::default);
        }
        let write = match op {
            WriteOp::Put(value) => NetWrite::Put(Cow::Borrowed(value)),
            WriteOp::Remove => NetWrite::Remove,
            // An empty range removes nothing (and RocksDB refuses one
            // whose end is before its start).
            WriteOp::RemoveRange(end) if end <= key => return,
            WriteOp::RemoveRange(end) => {
                self.ranges.push(RangeRemoval {
                    seq,
                    state,
                    start: key,
                    end,
                });
                return;
            }
            WriteOp::Append(bytes) => {
                // What the key held before, unless a range removal since
                // then dropped it.
                let before = self.index[state]
                    .get(key)
                    .map(|&i| &mut self.writes[i])
                    .filter(|before| {
                        !self
                            .ranges
                            .iter()
                            .rev()
                            .take_while(|range| range.seq > before.seq)
                            .any(|range| range.covers(state, key))
                    });
                match before.map(|before| std::mem::replace(&mut before.write, NetWrite::Remove)) {
                    None => NetWrite::Append(bytes.to_vec()),
                    Some(NetWrite::Remove) => NetWrite::Put(Cow::Owned(bytes.to_vec())),
                    Some(NetWrite::Put(value)) => {
                        let mut value = value.into_owned();
                        value.extend_from_slice(bytes);
                        NetWrite::Put(Cow::Owned(value))
                    }
                    Some(NetWrite::Append(mut appended)) => {
                        appended.extend_from_slice(bytes);
                        NetWrite::Append(appended)
                    }
                }
            }
        };
        match self.index[state].entry(key) {
            Entry::Occupied(slot) => {
                let known = &mut self.writes[*slot.get()];
                known.seq = seq;
                known.write = write;
            }
            Entry::Vacant(slot) => {
                slot.insert(self.writes.len());
                self.writes.push(KeyWrite {
                    state,
                    prefix: sort_prefix(key),
                    key,
                    seq,
                    write,
                });
            }
        }
    }

    /// The net writes: range removals, then each key's last write in state
    /// and key order, without those a later range removal dropped.
    pub(crate) fn finish(self) -> Folded<'a> {
        drop(self.index);
        let mut writes = self.writes;
        // By the inline prefix first: comparing the keys themselves,
        // scattered over the pieces, spent most of the sort waiting for
        // memory.
        writes.sort_unstable_by(|a, b| (a.state, a.prefix, a.key).cmp(&(b.state, b.prefix, b.key)));
        let mut dropped = vec![false; if self.ranges.is_empty() { 0 } else { writes.len() }];
        for range in &self.ranges {
            let first = writes.partition_point(|w| (w.state, w.key) < (range.state, range.start));
            for (i, w) in writes.iter().enumerate().skip(first) {
                if !range.covers(w.state, w.key) {
                    break;
                }
                dropped[i] |= w.seq < range.seq;
            }
        }
        let cells = writes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !dropped.get(*i).copied().unwrap_or(false))
            .map(|(_, w)| (w.state, w.key, w.write))
            .collect();
        let ranges = self.ranges.iter().map(|r| (r.state, r.start, r.end)).collect();
        Folded { ranges, cells }
    }
}

/// A key's first eight bytes as a number that orders as the bytes do
/// (shorter keys padded with zeros, and after their prefix by the full
/// comparison that follows).
fn sort_prefix(key: &[u8]) -> u64 {
    let mut prefix = [0u8; 8];
    let len = key.len().min(8);
    prefix[..len].copy_from_slice(&key[..len]);
    u64::from_be_bytes(prefix)
}

/// The net effect of folded writes ([`NetWrites::finish`]).
#[derive(Debug)]
pub(crate) struct Folded<'a> {
    /// Range removals, `(state, start, end exclusive)`: apply them first.
    pub(crate) ranges: Vec<(StateId, &'a [u8], &'a [u8])>,
    /// The last write of each key, in state and key order: apply them after
    /// the range removals (each is later than any that covers it).
    pub(crate) cells: Vec<(StateId, &'a [u8], NetWrite<'a>)>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// What RocksDB ends up holding after `ops` over `base`, one write at a
    /// time: the oracle.
    fn replay_one_by_one(
        base: &BTreeMap<(StateId, Vec<u8>), Vec<u8>>,
        ops: &[(StateId, Vec<u8>, Op)],
    ) -> BTreeMap<(StateId, Vec<u8>), Vec<u8>> {
        let mut db = base.clone();
        for (state, key, op) in ops {
            match op {
                Op::Put(v) => {
                    db.insert((*state, key.clone()), v.clone());
                }
                Op::Remove => {
                    db.remove(&(*state, key.clone()));
                }
                Op::Append(b) => db.entry((*state, key.clone())).or_default().extend_from_slice(b),
                Op::RemoveRange(end) => db.retain(|(s, k), _| !(s == state && k >= key && k < end)),
            }
        }
        db
    }

    /// The same through the fold: ranges first, then each key's net write.
    fn replay_folded(
        base: &BTreeMap<(StateId, Vec<u8>), Vec<u8>>,
        ops: &[(StateId, Vec<u8>, Op)],
    ) -> BTreeMap<(StateId, Vec<u8>), Vec<u8>> {
        let mut net = NetWrites::default();
        for (state, key, op) in ops {
            net.add(*state, key, op.as_write_op());
        }
        let folded = net.finish();
        let mut db = base.clone();
        for &(state, start, end) in &folded.ranges {
            db.retain(|(s, k), _| !(*s == state && k.as_slice() >= start && k.as_slice() < end));
        }
        let mut previous: Option<(StateId, &[u8])> = None;
        for (state, key, write) in &folded.cells {
            let (state, key) = (*state, *key);
            assert!(previous < Some((state, key)), "cells come in key order, once each");
            previous = Some((state, key));
            let k = (state, key.to_vec());
            match write {
                NetWrite::Put(v) => {
                    db.insert(k, v.to_vec());
                }
                NetWrite::Remove => {
                    db.remove(&k);
                }
                NetWrite::Append(b) => db.entry(k).or_default().extend_from_slice(b),
            }
        }
        db
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(Vec<u8>),
        Remove,
        Append(Vec<u8>),
        RemoveRange(Vec<u8>),
    }

    impl Op {
        fn as_write_op(&self) -> WriteOp<'_> {
            match self {
                Op::Put(v) => WriteOp::Put(v),
                Op::Remove => WriteOp::Remove,
                Op::Append(b) => WriteOp::Append(b),
                Op::RemoveRange(end) => WriteOp::RemoveRange(end),
            }
        }
    }

    /// Keys from a small alphabet, so writes collide and ranges cover some.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(0u8..4, 1..4)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..3).prop_map(Op::Put),
            2 => Just(Op::Remove),
            3 => prop::collection::vec(any::<u8>(), 1..3).prop_map(Op::Append),
            1 => key().prop_map(Op::RemoveRange),
        ]
    }

    proptest! {
        #[test]
        fn folded_writes_leave_what_writing_them_one_by_one_leaves(
            base in prop::collection::btree_map((0usize..2, key()), prop::collection::vec(any::<u8>(), 0..3), 0..12),
            ops in prop::collection::vec((0usize..2, key(), op()), 0..40),
        ) {
            prop_assert_eq!(replay_folded(&base, &ops), replay_one_by_one(&base, &ops));
        }
    }

    #[test]
    fn a_hot_key_written_in_every_segment_is_written_once() {
        let mut net = NetWrites::default();
        for count in [b"1", b"2", b"3"] {
            net.add(0, b"\x00\x01hot", WriteOp::Put(count));
        }
        assert_eq!(
            net.finish().cells,
            vec![(0, &b"\x00\x01hot"[..], NetWrite::Put(Cow::Borrowed(b"3")))]
        );
    }
}
