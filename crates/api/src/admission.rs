//! Admission: per-namespace invocation limits. An invocation is admitted only while its namespace is under its
//! invocations per minute and its invocations in flight; otherwise it gets `429`, as in OpenWhisk. An admitted
//! invocation holds an [`InFlight`] permit until it ends, blocking or not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Per-namespace invocation limits; past either, invocations get `429`. Defaults are OpenWhisk's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceLimits {
    /// Invocations of one namespace in flight at once.
    pub concurrent_invocations_max: u32,
    /// Invocations of one namespace per minute (a token bucket refilled evenly over the minute).
    pub invocations_per_minute_max: u32,
}

impl Default for NamespaceLimits {
    fn default() -> Self {
        NamespaceLimits { concurrent_invocations_max: 100, invocations_per_minute_max: 60 }
    }
}

type Counts = Arc<Mutex<HashMap<String, u32>>>;

/// Decides which invocations may start. Cheap to clone; clones share the counts.
#[derive(Clone)]
pub(crate) struct Admission {
    limits: NamespaceLimits,
    per_minute: Arc<governor::DefaultKeyedRateLimiter<String>>,
    /// Invocations in flight, by namespace.
    in_flight: Counts,
}

/// One admitted invocation of a namespace, counted in flight until dropped.
pub(crate) struct InFlight {
    in_flight: Counts,
    namespace: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut all = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = all.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: NamespaceLimits) -> Result<Admission> {
        let per_minute = std::num::NonZeroU32::new(limits.invocations_per_minute_max)
            .ok_or_else(|| Error::Start("invocations_per_minute_max must be at least 1".into()))?;
        Ok(Admission {
            limits,
            per_minute: Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute))),
            in_flight: Default::default(),
        })
    }

    /// Admits one invocation of `namespace`, or refuses it. The rate is checked first, so a refused invocation
    /// still spends a token (as OpenWhisk counts it).
    pub(crate) fn admit(&self, namespace: &str) -> Result<InFlight> {
        if self.per_minute.check_key(&namespace.to_string()).is_err() {
            return Err(Error::RateLimited { allowed: self.limits.invocations_per_minute_max });
        }
        let mut all = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = all.entry(namespace.to_string()).or_insert(0);
        if *n >= self.limits.concurrent_invocations_max {
            return Err(Error::TooManyInFlight { count: *n, allowed: self.limits.concurrent_invocations_max });
        }
        *n += 1;
        Ok(InFlight { in_flight: self.in_flight.clone(), namespace: namespace.to_string() })
    }
}
