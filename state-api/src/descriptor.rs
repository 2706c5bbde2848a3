//! State descriptors: a name, a kind, serde types and optional TTL.
//!
//! A descriptor is registered with a keyed backend to obtain a typed state
//! handle (see [`crate::state`]). The type-erased part, [`StateMeta`], is what
//! backends and snapshots see; it is written into every snapshot so that a
//! restore can recreate the states before the job registers them again.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ttl::TtlConfig;
use crate::{Error, Result};

/// The prefix of the states in which [`crate::timers::TimerService`] keeps
/// timers (Flink names its timer states `_timer_state/...` too); user
/// states may not use it.
pub const RESERVED_STATE_PREFIX: &str = "_timer_state/";

/// The five keyed state primitives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// One value per key.
    Value,
    /// An appendable list per key.
    List,
    /// A map from user keys to values per key.
    Map,
    /// One value per key, folded with a reduce function.
    Reducing,
    /// One accumulator per key, folded with an aggregate function.
    Aggregating,
}

impl StateKind {
    /// Whether the state is stored as a map of user keys (else one cell per key).
    pub fn is_map(self) -> bool {
        self == StateKind::Map
    }
}

/// The type-erased description of a registered state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// Unique name within an operator.
    pub name: String,
    /// Which primitive.
    pub kind: StateKind,
    /// Time-to-live, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlConfig>,
    /// Rust type name of the value (or element / accumulator); informational,
    /// shown by `checkpoints inspect`.
    pub value_type: String,
    /// Rust type name of the map's user key; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key_type: Option<String>,
    /// Rust type name of the namespace when the state is namespaced (a
    /// window's state: see [`crate::namespaced`]); `None` for a state in
    /// the default namespace only, Flink's `VoidNamespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_type: Option<String>,
}

impl StateMeta {
    /// A meta for `kind` named `name` holding values of type `V`.
    pub fn new<V: ?Sized>(name: impl Into<String>, kind: StateKind) -> Self {
        Self {
            name: name.into(),
            kind,
            ttl: None,
            value_type: std::any::type_name::<V>().to_owned(),
            user_key_type: None,
            namespace_type: None,
        }
    }

    /// Whether the state is scoped to namespaces as well as keys.
    pub fn is_namespaced(&self) -> bool {
        self.namespace_type.is_some()
    }

    /// Whether a backend stores the state as a map of user keys per key: a
    /// map state, or any namespaced state, whose cells are kept per
    /// namespace in a map from serialized namespace to cell (so that
    /// snapshots, rescaling and `checkpoints inspect` need nothing new).
    ///
    /// ```
    /// use streamstate_api::{StateKind, StateMeta};
    /// let mut window_sum = StateMeta::new::<u64>("sum", StateKind::Reducing);
    /// assert!(!window_sum.stores_map());
    /// window_sum.namespace_type = Some("TimeWindow".into());
    /// assert!(window_sum.stores_map());
    /// ```
    pub fn stores_map(&self) -> bool {
        self.kind.is_map() || self.is_namespaced()
    }

    /// Checks that `self` may be registered where `existing` is already
    /// registered under the same name.
    ///
    /// # Errors
    /// [`crate::ErrorKind::IncompatibleState`] when the kinds differ.
    pub fn check_compatible_with(&self, existing: &StateMeta) -> Result<()> {
        if self.kind != existing.kind {
            return Err(Error::new(
                crate::ErrorKind::IncompatibleState,
                format!(
                    "state is registered as {:?} but requested as {:?}",
                    existing.kind, self.kind
                ),
            )
            .with_context("state", self.name.clone()));
        }
        if self.is_namespaced() != existing.is_namespaced() {
            let scope = |meta: &StateMeta| {
                if meta.is_namespaced() {
                    "namespaced"
                } else {
                    "not namespaced"
                }
            };
            return Err(Error::new(
                crate::ErrorKind::IncompatibleState,
                format!("state is registered {} but requested {}", scope(existing), scope(self)),
            )
            .with_context("state", self.name.clone()));
        }
        Ok(())
    }

    /// Checks a state a user registers: [`StateMeta::validate`], and a
    /// name outside the prefix the timer service keeps for its own states
    /// ([`RESERVED_STATE_PREFIX`]).
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArgument`] for an empty or reserved name.
    pub fn validate_user_state(&self) -> Result<()> {
        self.validate()?;
        if self.name.starts_with(RESERVED_STATE_PREFIX) {
            return Err(Error::invalid_argument(format!(
                "state names starting with {RESERVED_STATE_PREFIX:?} are reserved for timers"
            ))
            .with_context("state", self.name.clone()));
        }
        Ok(())
    }

    /// Checks the name is usable.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArgument`] for an empty name.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::invalid_argument("state name must not be empty"));
        }
        Ok(())
    }
}

macro_rules! common_descriptor_methods {
    () => {
        /// Gives the state a time-to-live.
        #[must_use]
        pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
            self.meta.ttl = Some(ttl);
            self
        }

        /// The type-erased description.
        pub fn meta(&self) -> &StateMeta {
            &self.meta
        }
    };
}

/// Describes a [`crate::state::ValueState`].
///
/// ```
/// use streamstate_api::ValueStateDescriptor;
/// let count = ValueStateDescriptor::<u64>::new("count");
/// assert_eq!(count.meta().name, "count");
/// ```
#[derive(Debug, Clone)]
pub struct ValueStateDescriptor<T> {
    meta: StateMeta,
    _type: PhantomData<fn() -> T>,
}

impl<T> ValueStateDescriptor<T> {
    /// A value state named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            meta: StateMeta::new::<T>(name, StateKind::Value),
            _type: PhantomData,
        }
    }
    common_descriptor_methods!();
}

/// Describes a [`crate::state::ListState`].
#[derive(Debug, Clone)]
pub struct ListStateDescriptor<T> {
    meta: StateMeta,
    _type: PhantomData<fn() -> T>,
}

impl<T> ListStateDescriptor<T> {
    /// A list state named `name` with elements of type `T`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            meta: StateMeta::new::<T>(name, StateKind::List),
            _type: PhantomData,
        }
    }
    common_descriptor_methods!();
}

/// Describes a [`crate::state::MapState`].
#[derive(Debug, Clone)]
pub struct MapStateDescriptor<K, V> {
    meta: StateMeta,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapStateDescriptor<K, V> {
    /// A map state named `name` from `K` to `V`.
    pub fn new(name: impl Into<String>) -> Self {
        let mut meta = StateMeta::new::<V>(name, StateKind::Map);
        meta.user_key_type = Some(std::any::type_name::<K>().to_owned());
        Self {
            meta,
            _type: PhantomData,
        }
    }
    common_descriptor_methods!();
}

/// The function a [`crate::state::ReducingState`] folds values with.
pub type ReduceFn<T> = Arc<dyn Fn(&T, &T) -> T + Send + Sync>;

/// Describes a [`crate::state::ReducingState`].
///
/// ```
/// use streamstate_api::ReducingStateDescriptor;
/// let sum = ReducingStateDescriptor::new("sum", |a: &u64, b: &u64| a + b);
/// assert_eq!(sum.meta().name, "sum");
/// ```
#[derive(Clone)]
pub struct ReducingStateDescriptor<T> {
    meta: StateMeta,
    reduce: ReduceFn<T>,
}

impl<T> ReducingStateDescriptor<T> {
    /// A reducing state named `name` that folds values with `reduce`.
    pub fn new(name: impl Into<String>, reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> Self {
        Self {
            meta: StateMeta::new::<T>(name, StateKind::Reducing),
            reduce: Arc::new(reduce),
        }
    }

    /// The reduce function.
    pub fn reduce_fn(&self) -> &ReduceFn<T> {
        &self.reduce
    }
    common_descriptor_methods!();
}

impl<T> std::fmt::Debug for ReducingStateDescriptor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducingStateDescriptor")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Flink's `AggregateFunction`: folds inputs into an accumulator and derives
/// a result from it.
///
/// ```
/// use streamstate_api::AggregateFunction;
/// struct Average;
/// impl AggregateFunction for Average {
///     type In = u64;
///     type Acc = (u64, u64);
///     type Out = f64;
///     fn create_accumulator(&self) -> (u64, u64) { (0, 0) }
///     fn add(&self, value: &u64, acc: (u64, u64)) -> (u64, u64) { (acc.0 + value, acc.1 + 1) }
///     fn get_result(&self, acc: &(u64, u64)) -> f64 { acc.0 as f64 / acc.1 as f64 }
///     fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) { (a.0 + b.0, a.1 + b.1) }
/// }
/// assert_eq!(Average.get_result(&Average.add(&4, Average.create_accumulator())), 4.0);
/// ```
pub trait AggregateFunction: Send + Sync {
    /// Input values.
    type In;
    /// The accumulator stored in state.
    type Acc: Serialize + serde::de::DeserializeOwned;
    /// The result read from state.
    type Out;
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Folds `value` into `acc`.
    fn add(&self, value: &Self::In, acc: Self::Acc) -> Self::Acc;
    /// The result of an accumulator.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// One accumulator holding what `a` and `b` hold: merging session
    /// windows merges their accumulators
    /// ([`crate::namespaced::NamespacedAggregatingState::merge_namespaces`]).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// Describes a [`crate::state::AggregatingState`].
pub struct AggregatingStateDescriptor<A: AggregateFunction> {
    meta: StateMeta,
    function: Arc<A>,
}

impl<A: AggregateFunction> AggregatingStateDescriptor<A> {
    /// An aggregating state named `name` driven by `function`.
    pub fn new(name: impl Into<String>, function: A) -> Self {
        Self {
            meta: StateMeta::new::<A::Acc>(name, StateKind::Aggregating),
            function: Arc::new(function),
        }
    }

    /// The aggregate function.
    pub fn function(&self) -> &Arc<A> {
        &self.function
    }
    common_descriptor_methods!();
}

impl<A: AggregateFunction> Clone for AggregatingStateDescriptor<A> {
    fn clone(&self) -> Self {
        Self {
            meta: self.meta.clone(),
            function: Arc::clone(&self.function),
        }
    }
}

impl<A: AggregateFunction> std::fmt::Debug for AggregatingStateDescriptor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregatingStateDescriptor")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}
