//! Admission control for GraphQL requests: no tenant can take the service from
//! the others, and no request runs without an end.
//!
//! - Each tenant has a number of requests in flight ([`Limits::per_tenant`]) and,
//!   among them, of requests asking for fields that walk or replay the event log
//!   ([`Limits::per_tenant_expensive`]). A request that finds its tenant's slots
//!   taken waits at most [`Limits::queue_wait`], then is refused (`RATE_LIMITED`,
//!   HTTP 429 with `Retry-After`): other tenants' requests never wait behind it.
//! - The whole process has a bound too ([`Limits::in_flight`]): past it, a request
//!   waits at most the same queue wait for a slot and is then refused
//!   (`OVERLOADED`, HTTP 503 with `Retry-After`). Load beyond what the machine can
//!   do is turned away early instead of queueing without end: latency of the
//!   admitted requests stays bounded, memory does not grow with the backlog, and
//!   the service is back to normal as soon as the load drops.
//! - Every request has a deadline ([`Limits::deadline`], queueing included). A
//!   query or subscription set-up past it is cancelled (`DEADLINE_EXCEEDED`,
//!   retryable) and frees its connection and slots; so is a query whose client
//!   went away. A mutation is never cut between its commands: it runs to its end in
//!   its own task (keeping its tenant slot), and a client whose deadline passed
//!   first is told so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits, per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// GraphQL requests one tenant may have in flight.
    pub per_tenant: usize,
    /// Of those, requests with a field that walks or replays the event log.
    pub per_tenant_expensive: usize,
    /// How long a request waits for one of its tenant's slots before it is refused.
    pub queue_wait: Duration,
    /// The most a request may take, from arrival to answer.
    pub deadline: Duration,
    /// GraphQL requests the whole process may have in flight, all tenants together.
    pub in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_tenant: 16,
            per_tenant_expensive: 1,
            queue_wait: Duration::from_secs(1),
            deadline: Duration::from_secs(15),
            in_flight: 64,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("too many requests of this tenant in flight (at most {0}); retry shortly")]
    Tenant(usize),
    #[error(
        "too many requests of this tenant that walk or replay the event log in flight \
         (at most {0}); retry shortly"
    )]
    Expensive(usize),
    #[error(
        "the service is at capacity ({0} requests in flight); retry after the time \
         Retry-After gives"
    )]
    Overloaded(usize),
}

struct Slots {
    all: Arc<Semaphore>,
    expensive: Arc<Semaphore>,
}

/// The per-tenant slots of this process. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    limits: Limits,
    tenants: Arc<Mutex<HashMap<String, Arc<Slots>>>>,
    process: Arc<Semaphore>,
}

/// Held while a request runs; dropping it frees the tenant's slots.
#[derive(Debug)]
pub struct Permit {
    _process: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
    _expensive: Option<OwnedSemaphorePermit>,
}

/// Tenants whose slots are all free are forgotten once the map grows past this.
const PRUNE_ABOVE: usize = 1024;

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission {
            limits: Limits {
                per_tenant: limits.per_tenant.max(1),
                per_tenant_expensive: limits.per_tenant_expensive.max(1),
                in_flight: limits.in_flight.max(1),
                ..limits
            },
            tenants: Default::default(),
            process: Arc::new(Semaphore::new(limits.in_flight.max(1))),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn slots(&self, tenant: &str) -> Arc<Slots> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if tenants.len() > PRUNE_ABOVE {
            let (all, expensive) = (self.limits.per_tenant, self.limits.per_tenant_expensive);
            tenants.retain(|_, slots| {
                Arc::strong_count(slots) > 1
                    || slots.all.available_permits() < all
                    || slots.expensive.available_permits() < expensive
            });
        }
        tenants
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(Slots {
                    all: Arc::new(Semaphore::new(self.limits.per_tenant)),
                    expensive: Arc::new(Semaphore::new(self.limits.per_tenant_expensive)),
                })
            })
            .clone()
    }

    /// Takes one of `tenant`'s slots (and an expensive one when `expensive`),
    /// waiting at most the queue wait for each.
    pub async fn admit(&self, tenant: &str, expensive: bool) -> Result<Permit, Busy> {
        let slots = self.slots(tenant);
        let wait = self.limits.queue_wait;
        let take = |semaphore: &Arc<Semaphore>| {
            let semaphore = semaphore.clone();
            async move {
                match semaphore.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => tokio::time::timeout(wait, semaphore.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok),
                }
            }
        };
        // the expensive slot first: a request waiting for it holds nothing else
        let expensive = match expensive {
            true => Some(
                take(&slots.expensive)
                    .await
                    .ok_or(Busy::Expensive(self.limits.per_tenant_expensive))?,
            ),
            false => None,
        };
        let all = take(&slots.all)
            .await
            .ok_or(Busy::Tenant(self.limits.per_tenant))?;
        // the process's slot last: a request queued behind its own tenant holds none
        let process = take(&self.process)
            .await
            .ok_or(Busy::Overloaded(self.limits.in_flight))?;
        Ok(Permit {
            _process: process,
            _all: all,
            _expensive: expensive,
        })
    }
}

/// Aborts a task when dropped: a query's execution ends with its request (a
/// client that went away, a deadline that passed).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_tenant: 2,
            per_tenant_expensive: 1,
            queue_wait: Duration::from_millis(50),
            deadline: Duration::from_secs(1),
            in_flight: 3,
        }
    }

    #[tokio::test]
    async fn a_busy_tenant_is_refused_and_others_are_not() {
        let admission = Admission::new(limits());
        let a1 = admission.admit("a", false).await.unwrap();
        let _a2 = admission.admit("a", false).await.unwrap();
        assert_eq!(
            admission.admit("a", false).await.unwrap_err(),
            Busy::Tenant(2)
        );
        // another tenant is unaffected
        let _b = admission.admit("b", false).await.unwrap();
        // a freed slot is taken again
        drop(a1);
        admission.admit("a", false).await.unwrap();
    }

    #[tokio::test]
    async fn expensive_requests_have_their_own_bound() {
        let admission = Admission::new(limits());
        let heavy = admission.admit("a", true).await.unwrap();
        assert_eq!(
            admission.admit("a", true).await.unwrap_err(),
            Busy::Expensive(1)
        );
        // light requests of the same tenant still get in
        let _light = admission.admit("a", false).await.unwrap();
        let _other = admission.admit("b", true).await.unwrap();
        drop(heavy);
        admission.admit("a", true).await.unwrap();
    }

    #[tokio::test]
    async fn the_process_bound_refuses_past_capacity_and_frees_at_once() {
        let admission = Admission::new(limits());
        let a = admission.admit("a", false).await.unwrap();
        let _b = admission.admit("b", false).await.unwrap();
        let _c = admission.admit("c", false).await.unwrap();
        assert_eq!(
            admission.admit("d", false).await.unwrap_err(),
            Busy::Overloaded(3)
        );
        // a refused request holds nothing: its tenant's slot is free again
        drop(a);
        admission.admit("d", false).await.unwrap();
    }

    #[tokio::test]
    async fn a_waiting_request_gets_a_slot_freed_within_the_wait() {
        let admission = Admission::new(Limits {
            queue_wait: Duration::from_secs(5),
            ..limits()
        });
        let first = admission.admit("a", true).await.unwrap();
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.admit("a", true).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiter.await.unwrap().is_ok());
    }
}
