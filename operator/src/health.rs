//! What `/healthz` and `/readyz` of the operator report: the role of this replica (starting, standby, leading),
//! the reconciles in flight (one running far longer than any of its calls may take is stuck), and, while
//! leading, whether the leader Lease is still being renewed. The HTTP side is in `http.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where this replica is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Not connected to the Kubernetes API yet.
    #[default]
    Starting,
    /// Connected; waiting for the leader Lease (another replica reconciles).
    Standby,
    /// Holds the Lease (or runs without leader election) and reconciles.
    Leading,
}

#[derive(Debug, Default)]
struct State {
    role: Role,
    /// Reconciles running, by pipeline, with when each began.
    in_flight: HashMap<String, Instant>,
    /// While leading with a Lease: when its renewal was last seen, and how long a renewal may take.
    lease: Option<(Instant, Duration)>,
}

/// Shared between the controller, the lease watch and the HTTP endpoints.
#[derive(Clone, Debug)]
pub struct Watchdog {
    state: Arc<Mutex<State>>,
    /// A reconcile running longer than this is stuck: every call it makes has a timeout far below it.
    reconcile_limit: Duration,
}

impl Default for Watchdog {
    fn default() -> Self {
        Self::new(Duration::from_secs(300))
    }
}

impl Watchdog {
    pub fn new(reconcile_limit: Duration) -> Self {
        Self { state: Arc::default(), reconcile_limit }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_role(&self, role: Role) {
        self.lock().role = role;
    }

    pub fn role(&self) -> Role {
        self.lock().role
    }

    /// Marks a reconcile of `key` as running until the returned guard is dropped.
    pub fn reconciling(&self, key: &str) -> InFlight {
        self.lock().in_flight.insert(key.to_owned(), Instant::now());
        InFlight { watchdog: self.clone(), key: key.to_owned() }
    }

    /// The Lease was seen renewed now; it must be again within `within`.
    pub fn lease_renewed(&self, within: Duration) {
        self.lock().lease = Some((Instant::now(), within));
    }

    /// Why the process is not healthy, if it is not.
    pub fn problems(&self) -> Vec<String> {
        let s = self.lock();
        let mut out: Vec<String> = s
            .in_flight
            .iter()
            .filter(|(_, at)| at.elapsed() > self.reconcile_limit)
            .map(|(key, at)| {
                format!(
                    "the reconcile of {key} has run for {} s (limit {} s)",
                    at.elapsed().as_secs(),
                    self.reconcile_limit.as_secs()
                )
            })
            .collect();
        if let (Role::Leading, Some((seen, within))) = (s.role, s.lease)
            && seen.elapsed() > within
        {
            out.push(format!("the leader lease was not renewed for {} s", seen.elapsed().as_secs()));
        }
        out.sort();
        out
    }
}

/// A reconcile in flight; dropping it (at the end, or when the controller cancels it) ends it.
#[derive(Debug)]
pub struct InFlight {
    watchdog: Watchdog,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.watchdog.lock().in_flight.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_past_the_limit_and_an_unrenewed_lease_are_problems() {
        let w = Watchdog::new(Duration::from_millis(20));
        let guard = w.reconciling("ns/a");
        assert!(w.problems().is_empty());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(w.problems(), vec!["the reconcile of ns/a has run for 0 s (limit 0 s)".to_owned()]);
        drop(guard);
        assert!(w.problems().is_empty(), "a finished reconcile is no problem");

        w.lease_renewed(Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(20));
        assert!(w.problems().is_empty(), "a standby renews nothing");
        w.set_role(Role::Leading);
        assert_eq!(w.problems(), vec!["the leader lease was not renewed for 0 s".to_owned()]);
        w.lease_renewed(Duration::from_secs(10));
        assert!(w.problems().is_empty());
    }
}
