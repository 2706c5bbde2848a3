//! Timers: Flink's `InternalTimerService`, kept in any keyed backend.
//!
//! A timer is a (key, namespace, timestamp) in one of two time domains,
//! event time (fires when the watermark passes it) and processing time
//! (fires when the wall clock does). Registering a timer that exists, or
//! deleting one that does not, changes nothing. [`TimerService::poll`]
//! hands out due timers in timestamp order (ties by key, then namespace),
//! with the backend's current key set to the timer's key, so that a timer
//! callback reads and writes the state of the timer's key and namespace.
//!
//! ```
//! use streamstate_api::timers::{TimeDomain, TimerService};
//! use streamstate_api::{KeyedStateBackend, KeyedStateBackendExt};
//!
//! /// Sets a timer for `key` at `at`, then fires everything due by `watermark`.
//! fn fire(backend: &mut dyn KeyedStateBackend, key: &str, at: i64, watermark: i64) -> streamstate_api::Result<Vec<i64>> {
//!     let mut timers = TimerService::open(backend)?;
//!     backend.set_current_key_typed(&key)?;
//!     timers.register(backend, TimeDomain::EventTime, b"", at)?;
//!     let mut fired = Vec::new();
//!     while let Some(timer) = timers.poll(backend, TimeDomain::EventTime, watermark)? {
//!         fired.push(timer.timestamp);
//!     }
//!     Ok(fired)
//! }
//! ```
//!
//! # Storage
//!
//! Each domain's timers are a map state of the backend, named
//! `_timer_state/event` or `_timer_state/processing`: per key, a map from
//! `timestamp (8 bytes, big endian, sign bit flipped) | namespace` to
//! nothing. So timers are in every snapshot the backend writes (canonical
//! and native, full and incremental), restore exactly, split by key group
//! on a rescaling restore, and show in `checkpoints inspect`.
//!
//! Where the next timer comes from depends on the backend, as Flink's
//! `state.backend.rocksdb.timer-service.factory` does:
//! - **In memory** (the heap backends, and RocksDB's `HEAP` variant): the
//!   service keeps an ordered set of every timer of its key-group range
//!   (Flink's heap priority queue with its dedup set, here one
//!   `BTreeSet`); registering a timer that exists is a lookup in memory,
//!   and the next due timer is the set's first.
//! - **In the backend** (RocksDB's default,
//!   [`KeyedStateBackend::timers_in_time_order`]): RocksDB stores each
//!   timer state by key group, then timestamp, so the service holds only
//!   each key group's first few timers and reads the next ones from
//!   RocksDB when those have fired; the timers need not fit in memory.
//!
//! [`TimerService::open`] loads the index from the backend, which after a
//! restore holds exactly the timers of its range.

use std::collections::BTreeSet;

mod entry;
mod group_heads;

use entry::{get_timestamp, write_entry};

use group_heads::GroupHeads;

use serde::{Deserialize, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::get_varint;
use crate::descriptor::{StateKind, StateMeta, RESERVED_STATE_PREFIX};
use crate::{Error, Result};

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's timestamp.
    EventTime,
    /// Fires when the processing-time clock reaches the timer's timestamp.
    ProcessingTime,
}

impl TimeDomain {
    /// The name of the backend state holding this domain's timers.
    ///
    /// ```
    /// use streamstate_api::timers::TimeDomain;
    /// assert_eq!(TimeDomain::EventTime.state_name(), "_timer_state/event");
    /// ```
    pub fn state_name(self) -> &'static str {
        match self {
            TimeDomain::EventTime => "_timer_state/event",
            TimeDomain::ProcessingTime => "_timer_state/processing",
        }
    }

    /// The domain whose timers a state of this name holds, if any.
    pub fn of_state(name: &str) -> Option<TimeDomain> {
        [TimeDomain::EventTime, TimeDomain::ProcessingTime]
            .into_iter()
            .find(|domain| domain.state_name() == name)
    }
}

/// One timer as the service hands it out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    /// When it fires, in epoch milliseconds.
    pub timestamp: i64,
    /// The serialized key it was registered for.
    pub key: Vec<u8>,
    /// The serialized namespace it was registered in (empty for none).
    pub namespace: Vec<u8>,
}

/// Decodes a stored timer entry's user key into (timestamp, namespace):
/// what `checkpoints inspect` shows.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for fewer than 8 bytes.
pub fn decode_user_key(user_key: &[u8]) -> Result<(i64, &[u8])> {
    get_timestamp(user_key)
}

/// One domain's timers: the backend state and the index that orders them.
#[derive(Debug)]
struct Queue {
    state: StateId,
    index: Index,
}

/// How a queue finds its next timer. Entries are `timestamp | varint
/// len(key) | key | namespace`, so byte order is firing order.
#[derive(Debug)]
enum Index {
    /// Every timer in memory (Flink's `HEAP` timers): the backend's map is
    /// written through, for snapshots.
    Heap(BTreeSet<Vec<u8>>),
    /// The backend keeps the timers in timestamp order per key group
    /// (Flink's `ROCKSDB` timers): only the first few of each key group
    /// are in memory.
    Backend(GroupHeads),
}

impl Queue {
    fn decode(entry: &[u8]) -> Result<Timer> {
        let (timestamp, mut rest) = get_timestamp(entry)?;
        let len = get_varint(&mut rest)? as usize;
        if len > rest.len() {
            return Err(Error::corrupt("timer entry shorter than its key"));
        }
        let (key, namespace) = rest.split_at(len);
        Ok(Timer {
            timestamp,
            key: key.to_vec(),
            namespace: namespace.to_vec(),
        })
    }

    /// The queue of `domain`'s timer state, its index loaded from the
    /// backend.
    fn open<B: KeyedStateBackend + ?Sized>(backend: &mut B, domain: TimeDomain) -> Result<Self> {
        let mut meta = StateMeta::new::<()>(domain.state_name(), StateKind::Map);
        meta.user_key_type = Some("timestamp and namespace".into());
        debug_assert!(meta.name.starts_with(RESERVED_STATE_PREFIX));
        let state = backend.register_state(&meta)?;
        if backend.timers_in_time_order(state) {
            let heads = GroupHeads::open(backend, state)?;
            return Ok(Self {
                state,
                index: Index::Backend(heads),
            });
        }
        let mut order = BTreeSet::new();
        let mut entry = Vec::new();
        for key in backend.keys(state)? {
            backend.set_current_key(&key)?;
            for (user_key, _) in backend.map_entries(state)? {
                let (timestamp, namespace) = get_timestamp(&user_key)?;
                write_entry(&mut entry, timestamp, &key, namespace);
                order.insert(entry.clone());
            }
        }
        Ok(Self {
            state,
            index: Index::Heap(order),
        })
    }

    /// Whether the current key's timer `entry` in `namespace` is
    /// registered.
    fn contains<B: KeyedStateBackend + ?Sized>(&self, backend: &B, entry: &[u8], namespace: &[u8]) -> Result<bool> {
        match &self.index {
            Index::Heap(order) => Ok(order.contains(entry)),
            Index::Backend(heads) => Ok(heads.knows(entry)
                || backend
                    .map_get(self.state, &stored_user_key(entry, namespace))?
                    .is_some()),
        }
    }

    /// `entry`, of the current key (in `key_group`), was just stored.
    fn inserted(&mut self, entry: &[u8], key_group: u32) {
        match &mut self.index {
            Index::Heap(order) => {
                order.insert(entry.to_vec());
            }
            Index::Backend(heads) => heads.inserted(entry, key_group),
        }
    }

    /// `entry`, of a key in `key_group`, was just removed from the backend.
    fn removed<B: KeyedStateBackend + ?Sized>(&mut self, backend: &B, entry: &[u8], key_group: u32) -> Result<()> {
        match &mut self.index {
            Index::Heap(order) => {
                order.remove(entry);
                Ok(())
            }
            Index::Backend(heads) => heads.removed(backend, self.state, entry, key_group),
        }
    }

    /// The earliest timer's entry.
    fn first(&self) -> Option<&[u8]> {
        match &self.index {
            Index::Heap(order) => order.first().map(Vec::as_slice),
            Index::Backend(heads) => heads.first(),
        }
    }

    fn len(&self) -> usize {
        match &self.index {
            Index::Heap(order) => order.len(),
            Index::Backend(heads) => heads.len(),
        }
    }
}

/// The timers of one keyed backend: see the [module docs](self).
///
/// Like the typed state handles, the service holds no borrow of the
/// backend; pass the backend to every call.
#[derive(Debug)]
pub struct TimerService {
    event: Queue,
    processing: Queue,
    scratch: Vec<u8>,
}

impl TimerService {
    /// Registers the timer states with `backend` and loads the timers it
    /// holds (after a restore: those of its key-group range): all of them
    /// into memory, or, on a backend that keeps them in timestamp order
    /// ([`KeyedStateBackend::timers_in_time_order`]), each key group's
    /// first few. Changes the backend's current key.
    ///
    /// # Errors
    /// Backend errors; [`crate::ErrorKind::Corrupt`] for a malformed stored
    /// timer.
    pub fn open<B: KeyedStateBackend + ?Sized>(backend: &mut B) -> Result<Self> {
        Ok(Self {
            event: Queue::open(backend, TimeDomain::EventTime)?,
            processing: Queue::open(backend, TimeDomain::ProcessingTime)?,
            scratch: Vec::new(),
        })
    }

    /// Whether the timers are kept in the backend, in timestamp order,
    /// with only each key group's first few in memory (else all in memory).
    pub fn kept_in_backend(&self) -> bool {
        matches!(self.event.index, Index::Backend(_))
    }

    fn queue(&self, domain: TimeDomain) -> &Queue {
        match domain {
            TimeDomain::EventTime => &self.event,
            TimeDomain::ProcessingTime => &self.processing,
        }
    }

    fn queue_mut(&mut self, domain: TimeDomain) -> (&mut Queue, &mut Vec<u8>) {
        match domain {
            TimeDomain::EventTime => (&mut self.event, &mut self.scratch),
            TimeDomain::ProcessingTime => (&mut self.processing, &mut self.scratch),
        }
    }

    /// The queue of `domain`, the entry of the current key's timer at
    /// `timestamp` in `namespace`, and whether the queue holds it.
    fn find<B: KeyedStateBackend + ?Sized>(
        &mut self,
        backend: &B,
        domain: TimeDomain,
        namespace: &[u8],
        timestamp: i64,
    ) -> Result<(&mut Queue, &[u8], bool)> {
        let key = current_key(backend)?;
        let (queue, entry) = self.queue_mut(domain);
        write_entry(entry, timestamp, key, namespace);
        let present = queue.contains(backend, entry, namespace)?;
        Ok((queue, entry.as_slice(), present))
    }

    /// Registers a timer at `timestamp` for the backend's current key in
    /// `namespace` (serialized; empty for none). Returns whether it is new.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArgument`] before any key was set; backend
    /// errors, with the timer then not registered.
    pub fn register<B: KeyedStateBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &[u8],
        timestamp: i64,
    ) -> Result<bool> {
        let (queue, entry, present) = self.find(backend, domain, namespace, timestamp)?;
        if present {
            return Ok(false);
        }
        backend.map_put(queue.state, &stored_user_key(entry, namespace), &[])?;
        queue.inserted(entry, backend.current_key_group());
        Ok(true)
    }

    /// Deletes the timer at `timestamp` of the backend's current key in
    /// `namespace`. Returns whether there was one.
    ///
    /// # Errors
    /// As [`TimerService::register`].
    pub fn delete<B: KeyedStateBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &[u8],
        timestamp: i64,
    ) -> Result<bool> {
        let (queue, entry, present) = self.find(backend, domain, namespace, timestamp)?;
        if !present {
            return Ok(false);
        }
        backend.map_remove(queue.state, &stored_user_key(entry, namespace))?;
        queue.removed(backend, entry, backend.current_key_group())?;
        Ok(true)
    }

    /// The timestamp of the earliest timer of `domain`.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        let first = self.queue(domain).first()?;
        get_timestamp(first).ok().map(|(timestamp, _)| timestamp)
    }

    /// Removes and returns the earliest timer of `domain` due at `up_to`
    /// (its timestamp at most `up_to`), with the backend's current key set
    /// to the timer's key; `None` when no timer is due.
    ///
    /// # Errors
    /// Backend errors, with the timer then left in place;
    /// [`crate::ErrorKind::Corrupt`] for a malformed entry.
    pub fn poll<B: KeyedStateBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        up_to: i64,
    ) -> Result<Option<Timer>> {
        match self.next_timestamp(domain) {
            Some(next) if next <= up_to => {}
            _ => return Ok(None),
        }
        let (queue, _) = self.queue_mut(domain);
        let Some(first) = queue.first().map(<[u8]>::to_vec) else {
            return Ok(None);
        };
        let timer = Queue::decode(&first)?;
        backend.set_current_key(&timer.key)?;
        backend.map_remove(queue.state, &stored_user_key(&first, &timer.namespace))?;
        queue.removed(backend, &first, backend.current_key_group())?;
        Ok(Some(timer))
    }

    /// How many timers of `domain` are registered.
    pub fn len(&self, domain: TimeDomain) -> usize {
        self.queue(domain).len()
    }

    /// Whether no timer of either domain is registered.
    pub fn is_empty(&self) -> bool {
        self.event.len() == 0 && self.processing.len() == 0
    }

    /// The timers of `domain` in the order they fire (from the backend,
    /// when it keeps them: then a scan of every timer).
    ///
    /// # Errors
    /// Backend errors; [`crate::ErrorKind::Corrupt`] for a malformed entry.
    pub fn timers<B: KeyedStateBackend + ?Sized>(&self, backend: &B, domain: TimeDomain) -> Result<Vec<Timer>> {
        let queue = self.queue(domain);
        match &queue.index {
            Index::Heap(order) => order.iter().map(|e| Queue::decode(e)).collect(),
            Index::Backend(_) => {
                let mut all = Vec::new();
                for key_group in backend.key_group_range().iter() {
                    backend.scan_timers(queue.state, key_group, &mut |key, user_key| {
                        let (timestamp, namespace) = get_timestamp(user_key)?;
                        all.push(Timer {
                            timestamp,
                            key: key.to_vec(),
                            namespace: namespace.to_vec(),
                        });
                        Ok(true)
                    })?;
                }
                // Firing order is the index entries' byte order (the key's
                // length before its bytes), not `Timer`'s field order.
                let mut entry = Vec::new();
                all.sort_by_cached_key(|t| {
                    write_entry(&mut entry, t.timestamp, &t.key, &t.namespace);
                    entry.clone()
                });
                Ok(all)
            }
        }
    }
}

/// The user key a timer is stored under in its key's map: the entry's
/// timestamp, then the namespace.
fn stored_user_key(entry: &[u8], namespace: &[u8]) -> Vec<u8> {
    let mut user_key = Vec::with_capacity(8 + namespace.len());
    user_key.extend_from_slice(&entry[..8]);
    user_key.extend_from_slice(namespace);
    user_key
}

fn current_key<B: KeyedStateBackend + ?Sized>(backend: &B) -> Result<&[u8]> {
    let key = backend.current_key();
    if key.is_empty() {
        return Err(Error::invalid_argument(
            "a timer needs a current key: call set_current_key first",
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_decodes_to_its_parts() {
        let mut entry = Vec::new();
        write_entry(&mut entry, -7, b"key", b"ns");
        assert_eq!(
            Queue::decode(&entry).unwrap(),
            Timer {
                timestamp: -7,
                key: b"key".to_vec(),
                namespace: b"ns".to_vec()
            }
        );
        assert!(Queue::decode(&entry[..9]).is_err());
        assert!(get_timestamp(&[1, 2]).is_err());
    }
}
