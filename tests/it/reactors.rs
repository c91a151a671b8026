//! The reactor runtime and the service's reactors, on both backends: checkpoints
//! survive restarts, a replayed batch changes nothing, two runtimes on one database
//! handle each event once, a failing event is retried and never skipped, and each
//! reactor repairs the crash it exists for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregates::canonical::CanonicalCommand;
use aggregates::content::ContentHash;
use aggregates::environment::{Environment, EnvironmentCommand};
use aggregates::incident::{
    AffectedWorkflow, DriftIncident, IncidentCommand, IncidentOpening, IncidentStatus,
    ResolutionType,
};
use aggregates::kernel::command::Role;
use aggregates::mapping::{MappingCommand, MappingStatus, Observation, WorkflowMapping};
use aggregates::reservation::{LinkSlot, Reservation};
use eventstore::sql::{Dialect, Sql};
use eventstore::{Store, StoredEvent};
use futures::future::BoxFuture;
use workflowops::command::bus::{CommandContext, Committed};
use workflowops::command::domain::Domain;
use workflowops::reactors::{
    incident_slot, link_slot, ReactError, Reaction, Reactor, ReactorOptions, ReactorRuntime,
    Reactors, Step, Trigger, WaitError,
};
use workflowops::workflows::incident_slot::report_drift;

use crate::conformance::register;
use crate::support::{admin, both_backends, ctx, id, AbortOnDrop, Kind, TestStore, WAIT};

both_backends!(
    checkpoint_survives_a_restart,
    two_runtimes_handle_each_event_once,
    a_failing_event_is_retried_and_never_skipped,
    a_refused_effect_stops_the_reactor_and_ends_waits,
    partitions_react_concurrently_and_stop_at_the_earliest_failure,
    a_step_already_in_the_batch_is_skipped_without_reacting,
    a_batched_reactor_passes_nothing_before_its_flush,
    reserved_incident_is_opened_by_the_reactor,
    closing_an_incident_releases_its_slot,
    leaving_linked_releases_the_link_slot,
    replaying_handled_batches_changes_nothing,
);

/// Fast retries, so tests see several attempts.
fn options() -> ReactorOptions {
    ReactorOptions {
        poll: Duration::from_millis(50),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..Default::default()
    }
}

/// A test reactor: counts the `environment.registered` events it handled, by
/// position, after failing the first `failures` attempts (transiently, or
/// permanently).
struct Counter {
    name: &'static str,
    seen: Arc<Mutex<HashMap<i64, u32>>>,
    failures: AtomicU32,
    permanent: bool,
}

impl Counter {
    fn new(name: &'static str, seen: &Arc<Mutex<HashMap<i64, u32>>>) -> Counter {
        Counter {
            name,
            seen: seen.clone(),
            failures: AtomicU32::new(0),
            permanent: false,
        }
    }
}

impl Reactor for Counter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        event.event_type == "environment.registered"
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(async move {
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                let message = format!("not now ({})", trigger.effect_id());
                return Err(if self.permanent {
                    ReactError::Permanent(message)
                } else {
                    ReactError::Transient(message)
                });
            }
            count(&self.seen, trigger);
            Ok(Reaction::Done)
        })
    }
}

/// A batched reactor: its reactions queue positions, its flush makes them happen
/// (after failing the first `failures` flushes).
struct Batched {
    queued: Mutex<Vec<i64>>,
    flushed: Arc<Mutex<Vec<i64>>>,
    failures: AtomicU32,
}

impl Reactor for Batched {
    fn name(&self) -> &'static str {
        "batched"
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        event.event_type == "environment.registered"
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(async move {
            self.queued.lock().unwrap().push(trigger.event.position);
            Ok(Reaction::Done)
        })
    }

    fn batched(&self) -> bool {
        true
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), ReactError>> {
        Box::pin(async move {
            let queued = std::mem::take(&mut *self.queued.lock().unwrap());
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(ReactError::Transient("the flush failed".into()));
            }
            self.flushed.lock().unwrap().extend(queued);
            Ok(())
        })
    }
}

/// Steps `runner` until every reactor it runs has handled the event at `position`.
/// (`catch_up` stops when nothing is readable yet; on PostgreSQL an event becomes
/// readable only once no older transaction anywhere on the server is still open.)
async fn step_to(runner: &mut ReactorRuntime, store: &Store, position: i64) {
    let target = store
        .cursor_after_position(position)
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        runner.step().await.unwrap();
        if runner
            .handle()
            .status()
            .iter()
            .all(|s| s.running_here && s.checkpoint >= target)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reactors did not reach {position}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the log's first `n` events are readable in one batch (PostgreSQL
/// reads only below older transactions still open anywhere on the server).
async fn wait_readable(store: &Store, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while store
        .read_after(eventstore::LogCursor::START, 100)
        .await
        .unwrap()
        .len()
        < n
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn head(store: &Store) -> i64 {
    store.last_position().await.unwrap()
}

fn runtime(store: &Store, reactor: Counter) -> ReactorRuntime {
    ReactorRuntime::new(
        store.clone(),
        vec![Arc::new(reactor)],
        options(),
        Reactors::new(store.clone()),
    )
}

/// Registers environments `{prefix}0..{prefix}{n}`; returns their events' positions.
async fn register_environments(domain: &Domain, prefix: &str, n: usize) -> Vec<i64> {
    let mut positions = vec![];
    for i in 0..n {
        let committed = domain
            .environment(
                &admin("acme"),
                &id(&format!("{prefix}{i}")),
                register("Env"),
            )
            .await
            .unwrap();
        positions.push(committed.position.unwrap());
    }
    positions
}

/// Counts a reaction to the trigger's event.
fn count(seen: &Mutex<HashMap<i64, u32>>, trigger: &Trigger<'_>) {
    *seen
        .lock()
        .unwrap()
        .entry(trigger.event.position)
        .or_default() += 1;
}

fn counts(seen: &Arc<Mutex<HashMap<i64, u32>>>) -> HashMap<i64, u32> {
    seen.lock().unwrap().clone()
}

fn once_each(positions: &[i64]) -> HashMap<i64, u32> {
    positions.iter().map(|&p| (p, 1)).collect()
}

async fn checkpoint_survives_a_restart(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let first = register_environments(&domain, "a", 3).await;
    let mut runner = runtime(&t.store, Counter::new("counter", &seen));
    step_to(&mut runner, &t.store, *first.last().unwrap()).await;
    assert_eq!(counts(&seen), once_each(&first));
    let status = runner.handle().status();
    assert_eq!(status[0].checkpoint.position, *first.last().unwrap());
    assert_eq!(status[0].events_handled, 3);
    drop(runner);

    // a new runtime (a restart) resumes from the stored checkpoint
    let second = register_environments(&domain, "b", 2).await;
    let mut restarted = runtime(&t.store, Counter::new("counter", &seen));
    step_to(&mut restarted, &t.store, *second.last().unwrap()).await;
    let all: Vec<i64> = first.iter().chain(&second).copied().collect();
    assert_eq!(counts(&seen), once_each(&all), "nothing handled twice");
    assert_eq!(restarted.handle().status()[0].events_handled, 5);
    assert_eq!(restarted.step().await.unwrap(), Step::Idle);

    // another reactor has its own checkpoint: it starts at the beginning
    let other_seen = Arc::new(Mutex::new(HashMap::new()));
    let mut other = runtime(&t.store, Counter::new("other", &other_seen));
    step_to(&mut other, &t.store, *second.last().unwrap()).await;
    assert_eq!(counts(&other_seen), once_each(&all));
}

async fn two_runtimes_handle_each_event_once(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    // two replicas: their own pools on one database
    let replica = Store::connect(&t.url, 4).await.unwrap();
    let a = runtime(&t.store, Counter::new("counter", &seen));
    let b = runtime(&replica, Counter::new("counter", &seen));
    let (handle_a, task_a) = a.spawn();
    let (handle_b, task_b) = b.spawn();
    let handles = [handle_a, handle_b];
    let mut tasks = [Some(AbortOnDrop(task_a)), Some(AbortOnDrop(task_b))];
    let mut positions = vec![];
    for round in 0..3 {
        positions.extend(register_environments(&domain, &format!("r{round}-"), 5).await);
        tokio::task::yield_now().await;
    }
    let last = *positions.last().unwrap();
    // one wait reads the owner's progress, the other its stored checkpoint
    for handle in &handles {
        handle.wait_for(last, WAIT).await.unwrap();
    }
    assert_eq!(counts(&seen), once_each(&positions));
    let running: Vec<bool> = handles.iter().map(|h| h.status()[0].running_here).collect();
    assert_eq!(
        running.iter().filter(|r| **r).count(),
        1,
        "exactly one runtime runs the reactor: {running:?}"
    );

    // the one running it stops; the other takes over from its checkpoint
    let owner = running.iter().position(|r| *r).unwrap();
    let stopped = tasks[owner].take().unwrap();
    stopped.0.abort();
    let survivor = &handles[1 - owner];
    let more = register_environments(&domain, "after-", 4).await;
    survivor
        .wait_for(*more.last().unwrap(), WAIT)
        .await
        .unwrap();
    positions.extend(more);
    assert_eq!(counts(&seen), once_each(&positions));
    assert!(survivor.status()[0].running_here);
}

async fn a_failing_event_is_retried_and_never_skipped(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let positions = register_environments(&domain, "e", 2).await;
    let mut counter = Counter::new("flaky", &seen);
    counter.failures = AtomicU32::new(2);
    let mut runner = runtime(&t.store, counter);
    // the first attempt fails: the checkpoint stays before the event
    let deadline = tokio::time::Instant::now() + WAIT;
    while runner.handle().status()[0].blocked.is_none() {
        assert_eq!(runner.step().await.unwrap(), Step::Idle);
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = runner.handle().status().remove(0);
    let blocked = status.blocked.clone().expect("blocked on the first event");
    assert_eq!(blocked.position, positions[0]);
    assert_eq!(blocked.attempts, 1);
    assert!(!blocked.permanent);
    assert!(status.checkpoint.position < positions[0]);
    assert!(counts(&seen).is_empty());
    // the stored row says so too (other processes and restarts see it)
    let mut sql = Sql::new(Dialect::of(&t.store));
    sql.push("SELECT position, blocked_position, blocked_attempts FROM reactor_checkpoints");
    let rows: Vec<(i64, Option<i64>, i64)> = sql.fetch_as(&t.store).await.unwrap();
    assert_eq!(rows, vec![(0, Some(positions[0]), 1)]);
    // retried with backoff until it works; then everything is handled, once
    let handle = runner.handle();
    let waited = handle
        .wait_for(*positions.last().unwrap(), Duration::from_millis(1))
        .await;
    assert!(matches!(
        waited,
        Err(WaitError::Timeout {
            last_error: Some(_),
            ..
        })
    ));
    let (handle, task) = runner.spawn();
    let _task = AbortOnDrop(task);
    handle
        .wait_for(*positions.last().unwrap(), WAIT)
        .await
        .unwrap();
    assert_eq!(counts(&seen), once_each(&positions));
    let status = handle.status().remove(0);
    assert_eq!(status.blocked, None);
    assert_eq!(status.events_handled, 2);
}

async fn a_refused_effect_stops_the_reactor_and_ends_waits(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let positions = register_environments(&domain, "e", 2).await;
    let mut counter = Counter::new("refused", &seen);
    counter.failures = AtomicU32::new(u32::MAX);
    counter.permanent = true;
    let (handle, task) = runtime(&t.store, counter).spawn();
    let _task = AbortOnDrop(task);
    let error = handle.wait_for(positions[1], WAIT).await.unwrap_err();
    let WaitError::Blocked { reactor, blocked } = error else {
        panic!("expected a blocked reactor, got {error:?}");
    };
    assert_eq!(reactor, "refused");
    assert_eq!(blocked.position, positions[0]);
    assert!(blocked.permanent);
    // it keeps trying, and never moves past the event
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = handle.status().remove(0);
    assert!(status.blocked.unwrap().attempts >= 2);
    assert!(status.checkpoint.position < positions[0]);
    assert!(counts(&seen).is_empty());
}

/// A test reactor partitioned by aggregate: counts `environment.registered` events
/// by position; the first reaction to the environment `hold` waits for `release`
/// and then fails (transiently), later ones succeed.
struct Partitioned {
    seen: Arc<Mutex<HashMap<i64, u32>>>,
    hold: String,
    release: Arc<tokio::sync::Notify>,
    held: AtomicBool,
}

impl Reactor for Partitioned {
    fn name(&self) -> &'static str {
        "partitioned"
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        event.event_type == "environment.registered"
    }

    fn partition<'e>(&self, event: &'e StoredEvent) -> &'e str {
        &event.aggregate_id
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(async move {
            if trigger.event.aggregate_id == self.hold && !self.held.swap(true, Ordering::SeqCst) {
                self.release.notified().await;
                return Err(ReactError::Transient("held, then failed".into()));
            }
            count(&self.seen, trigger);
            Ok(Reaction::Done)
        })
    }
}

async fn partitions_react_concurrently_and_stop_at_the_earliest_failure(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let positions = register_environments(&domain, "e", 4).await;
    wait_readable(&t.store, 4).await;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let release = Arc::new(tokio::sync::Notify::new());
    let reactor = Partitioned {
        seen: seen.clone(),
        hold: "acme:e1".to_string(),
        release: release.clone(),
        held: AtomicBool::new(false),
    };
    // a retry late enough for the blocked state to be seen
    let options = ReactorOptions {
        retry_min: Duration::from_millis(300),
        ..options()
    };
    let (handle, task) = ReactorRuntime::new(
        t.store.clone(),
        vec![Arc::new(reactor)],
        options,
        Reactors::new(t.store.clone()),
    )
    .spawn();
    let _task = AbortOnDrop(task);

    // e1 waits; the other partitions go on without it
    let others = [positions[0], positions[2], positions[3]];
    let deadline = tokio::time::Instant::now() + WAIT;
    while counts(&seen) != once_each(&others) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other partitions did not react while e1 waited: {:?}",
            counts(&seen)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // waiters see the dealt-with prefix only: not past the event still pending
    let status = handle.status().remove(0);
    assert_eq!(status.checkpoint.position, positions[0]);
    let waited = handle
        .wait_for(positions[1], Duration::from_millis(50))
        .await;
    assert!(
        matches!(waited, Err(WaitError::Timeout { .. })),
        "{waited:?}"
    );

    // e1 fails: the checkpoint stays before it, and the reactor is blocked there
    release.notify_one();
    let deadline = tokio::time::Instant::now() + WAIT;
    let blocked = loop {
        if let Some(blocked) = handle.status().remove(0).blocked {
            break blocked;
        }
        assert!(tokio::time::Instant::now() < deadline, "never blocked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(blocked.position, positions[1]);
    // the retry handles e1, and replays what came after it (idempotent reactions)
    handle.wait_for(positions[3], WAIT).await.unwrap();
    let status = handle.status().remove(0);
    assert_eq!(status.blocked, None);
    assert_eq!(status.events_handled, 4, "each event counted once");
    assert_eq!(
        counts(&seen),
        HashMap::from([
            (positions[0], 1),
            (positions[1], 1),
            (positions[2], 2),
            (positions[3], 2)
        ])
    );
}

/// A test reactor whose step for an environment's registration is shown taken by
/// the environment's deactivation: counts the registrations it reacted to.
struct Shown {
    seen: Arc<Mutex<HashMap<i64, u32>>>,
}

impl Reactor for Shown {
    fn name(&self) -> &'static str {
        "shown"
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        event.event_type == "environment.registered"
    }

    fn step(&self, event: &StoredEvent) -> Option<String> {
        Some(format!("deactivate {}", event.aggregate_id))
    }

    fn step_taken(&self, event: &StoredEvent) -> Option<String> {
        (event.event_type == "environment.deactivated")
            .then(|| format!("deactivate {}", event.aggregate_id))
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(async move {
            count(&self.seen, trigger);
            Ok(Reaction::Done)
        })
    }
}

async fn a_step_already_in_the_batch_is_skipped_without_reacting(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let positions = register_environments(&domain, "e", 3).await;
    let deactivated = domain
        .environment(
            &admin("acme"),
            &id("e1"),
            EnvironmentCommand::Deactivate { reason: None },
        )
        .await
        .unwrap()
        .position
        .unwrap();
    wait_readable(&t.store, 4).await;
    let run = |batch_size: i64, grace: Duration| {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let runner = ReactorRuntime::new(
            t.store.clone(),
            vec![Arc::new(Shown { seen: seen.clone() })],
            ReactorOptions {
                batch_size,
                grace,
                // every step writes its checkpoint: the next runner starts there
                checkpoint_every: Duration::ZERO,
                ..options()
            },
            Reactors::new(t.store.clone()),
        );
        (seen, runner)
    };

    // one batch holds e1's registration and its deactivation: e1 is not reacted to
    let (seen, mut runner) = run(100, Duration::ZERO);
    step_to(&mut runner, &t.store, deactivated).await;
    assert_eq!(
        counts(&seen),
        once_each(&[positions[0], positions[2]]),
        "e1's step is in the log already"
    );
    let status = runner.handle().status().remove(0);
    assert_eq!((status.events_handled, status.events_skipped), (2, 1));
    assert_eq!(status.blocked, None);

    // A young trigger waits for its grace: the step its caller takes meanwhile lands
    // in the log, and the reactor then skips it.
    let e3 = register_environments(&domain, "young", 1).await[0];
    wait_readable(&t.store, 5).await;
    drop(runner);
    let (seen, mut runner) = run(100, Duration::from_secs(3600));
    step_to(&mut runner, &t.store, deactivated).await;
    for _ in 0..3 {
        runner.step().await.unwrap();
    }
    let status = runner.handle().status().remove(0);
    assert_eq!(
        status.checkpoint.position, deactivated,
        "stops before the young one"
    );
    assert_eq!(status.blocked, None, "waiting is not failing");
    let taken = domain
        .environment(
            &admin("acme"),
            &id("young0"),
            EnvironmentCommand::Deactivate { reason: None },
        )
        .await
        .unwrap()
        .position
        .unwrap();
    wait_readable(&t.store, 6).await;
    step_to(&mut runner, &t.store, taken).await;
    assert!(counts(&seen).is_empty(), "{:?}", counts(&seen));
    let status = runner.handle().status().remove(0);
    assert_eq!((status.events_handled, status.events_skipped), (2, 2));
    drop(runner);

    // one event per batch: the evidence comes later, so every old event is reacted to
    rewind_reactors(&t.store).await;
    let (seen, mut runner) = run(1, Duration::ZERO);
    step_to(&mut runner, &t.store, taken).await;
    let mut all = positions.clone();
    all.push(e3);
    assert_eq!(counts(&seen), once_each(&all));
}

fn opening(affected: usize) -> IncidentOpening {
    IncidentOpening {
        production: true,
        affected_workflows: (0..affected)
            .map(|i| AffectedWorkflow {
                workflow_id: format!("wf{i}"),
                name: format!("Workflow {i}"),
            })
            .collect(),
        snapshot_digest: Some("ab".repeat(32)),
        policy: Default::default(),
    }
}

/// A drift report on `acme:prod` naming `affected` workflows, as the drift job sends.
async fn report_on_prod(
    domain: &Domain,
    affected: usize,
) -> (aggregates::kernel::ids::LocalId, Committed<DriftIncident>) {
    report_drift(
        domain,
        &ctx("acme", Role::System),
        &id("prod"),
        opening(affected).affected_workflows,
        None,
        Default::default(),
    )
    .await
    .unwrap()
}

async fn load<A: cqrs_es::Aggregate + Clone + 'static>(domain: &Domain, aggregate_id: &str) -> A {
    domain
        .bus()
        .load::<A>(aggregate_id)
        .await
        .unwrap()
        .into_state()
}

/// A reservation committed alone (the process died before anything else): the
/// reactor opens the incident it names, as the drift job, in the reservation's
/// correlation and caused by it.
async fn reserved_incident_is_opened_by_the_reactor(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let system = CommandContext {
        correlation_id: "drift-check-7".into(),
        ..ctx("acme", Role::System)
    };
    let reserved = domain
        .environment(
            &system,
            &id("prod"),
            EnvironmentCommand::ReserveIncidentSlot {
                incident_id: id("inc-1"),
                opening: Some(opening(3)),
            },
        )
        .await
        .unwrap();
    let reserved_at = reserved.position.unwrap();
    assert!(!load::<DriftIncident>(&domain, "acme:inc-1").await.opened);

    let (reactors, task) = ReactorRuntime::standard(&domain, options()).spawn();
    let _task = AbortOnDrop(task);
    reactors
        .wait_for_reactor(incident_slot::NAME, reserved_at, WAIT)
        .await
        .unwrap();
    let incident = load::<DriftIncident>(&domain, "acme:inc-1").await;
    assert!(incident.opened);
    assert_eq!(incident.environment_id, "prod");
    assert_eq!(incident.status, IncidentStatus::Detected);
    assert_eq!(incident.affected_workflows, opening(3).affected_workflows);
    assert_eq!(incident.snapshot_digest, opening(3).snapshot_digest);
    assert!(incident.production);
    let events = t
        .store
        .aggregate_events("incident", "acme:inc-1")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let meta = &events[0].metadata;
    assert_eq!(meta["actor"], "system:drift");
    assert_eq!(meta["actor_role"], "system");
    assert_eq!(meta["correlation_id"], "drift-check-7");
    assert_eq!(meta["causation_id"], reserved_at.to_string());

    // a drift report now updates the incident the reactor opened
    let (updated, _) = report_on_prod(&domain, 5).await;
    assert_eq!(updated.as_str(), "inc-1");
    assert_eq!(
        load::<DriftIncident>(&domain, "acme:inc-1")
            .await
            .affected_workflows
            .len(),
        5
    );
}

async fn closing_an_incident_releases_its_slot(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain();
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    let (incident_id, opened) = report_on_prod(&domain, 2).await;
    assert!(opened.state.opened);
    assert_eq!(
        opened.events.len(),
        1,
        "the report returns the Detected event"
    );
    assert!(opened.position.is_some());
    let close = IncidentCommand::Close {
        reason: Some("reverted".into()),
        resolution_type: Some(ResolutionType::Revert),
    };
    // the close alone, as a process that stopped right after it would leave it
    // (`Domain::incident` releases the slot itself at once: below)
    let closed = domain
        .bus()
        .execute::<DriftIncident, _>(&admin("acme"), &[&incident_id], close.clone(), false, &())
        .await
        .unwrap();
    let closed_at = closed.position.unwrap();
    domain
        .reactors()
        .wait_for_reactor(incident_slot::NAME, closed_at, WAIT)
        .await
        .unwrap();
    assert_eq!(
        load::<Environment>(&domain, "acme:prod")
            .await
            .active_incident,
        None
    );
    let released = t
        .store
        .aggregate_events("environment", "acme:prod")
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "environment.incident_slot_released")
        .expect("released by the reactor");
    assert_eq!(released.metadata["actor"], "system:incident-slot");
    assert_eq!(released.metadata["causation_id"], closed_at.to_string());
    let close_event = t
        .store
        .aggregate_events("incident", &format!("acme:{incident_id}"))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(close_event.event_type, "incident.closed");
    assert_eq!(
        released.metadata["correlation_id"], close_event.metadata["correlation_id"],
        "the release shares the close's correlation"
    );

    // a close through the domain frees the slot at once, without the reactor
    let quiet = t.domain_without_reactors();
    let (second, _) = report_on_prod(&quiet, 1).await;
    assert_ne!(second, incident_id);
    quiet
        .incident(&admin("acme"), &second, close, false)
        .await
        .unwrap();
    assert_eq!(
        load::<Environment>(&quiet, "acme:prod")
            .await
            .active_incident,
        None
    );
}

fn observe(wf: &str) -> MappingCommand {
    MappingCommand::Observe {
        environment_id: id("prod"),
        n8n_workflow_id: id(wf),
        observation: Observation {
            name: format!("Workflow {wf}"),
            content_hash: ContentHash::parse(&"ab".repeat(32)).unwrap(),
            n8n_updated_at: None,
        },
        auto_link: None,
    }
}

fn link() -> MappingCommand {
    MappingCommand::Link {
        canonical_id: id("orders"),
    }
}

async fn slot_holder(domain: &Domain) -> Option<String> {
    load::<Reservation<LinkSlot>>(domain, "acme:prod:orders")
        .await
        .holder
}

/// Sets up `orders` and mappings `wf1`, `wf2` in `prod`, `wf1` linked to `orders`.
async fn linked_workflow(domain: &Domain) {
    domain
        .canonical(
            &admin("acme"),
            &id("orders"),
            CanonicalCommand::Create {
                canonical_id: id("orders"),
                name: "Orders".into(),
                slug: None,
                git_path: None,
            },
        )
        .await
        .unwrap();
    let dev = ctx("acme", Role::Developer);
    for wf in ["wf1", "wf2"] {
        domain
            .mapping(&dev, &id("prod"), &id(wf), observe(wf))
            .await
            .unwrap();
    }
    domain
        .mapping(&dev, &id("prod"), &id("wf1"), link())
        .await
        .unwrap();
}

/// The mapping left `linked` and the process died before the slot was released:
/// the reactor releases it, and another workflow can link.
async fn leaving_linked_releases_the_link_slot(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let dev = ctx("acme", Role::Developer);
    linked_workflow(&domain).await;
    let unlinked = domain
        .mapping(
            &dev,
            &id("prod"),
            &id("wf1"),
            MappingCommand::Unlink {
                reason: Some("wrong workflow".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(unlinked.state.status, MappingStatus::Untracked);
    assert_eq!(slot_holder(&domain).await.as_deref(), Some("wf1"));
    // with no reactor running, the slot stays taken
    let refused = domain
        .mapping(&dev, &id("prod"), &id("wf2"), link())
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "VALIDATION");

    let (reactors, task) = ReactorRuntime::standard(&domain, options()).spawn();
    let _task = AbortOnDrop(task);
    reactors
        .wait_for_reactor(link_slot::NAME, unlinked.position.unwrap(), WAIT)
        .await
        .unwrap();
    assert_eq!(slot_holder(&domain).await, None);
    domain
        .mapping(&dev, &id("prod"), &id("wf2"), link())
        .await
        .unwrap();
    assert_eq!(slot_holder(&domain).await.as_deref(), Some("wf2"));

    // a link right after an unlink waits for the release instead of being refused
    let unlink = MappingCommand::Unlink { reason: None };
    domain
        .mapping(&dev, &id("prod"), &id("wf2"), unlink)
        .await
        .unwrap();
    domain
        .mapping(&dev, &id("prod"), &id("wf1"), link())
        .await
        .unwrap();
    assert_eq!(slot_holder(&domain).await.as_deref(), Some("wf1"));
    let wf1 = load::<WorkflowMapping>(&domain, "acme:prod:wf1").await;
    assert_eq!(wf1.status, MappingStatus::Linked);
}

/// Rewinds every reactor's checkpoint to the start of the log: what a crash after
/// the effects and before the checkpoint looks like, for every batch at once.
async fn rewind_reactors(store: &Store) {
    let mut sql = Sql::new(Dialect::of(store));
    sql.push("UPDATE reactor_checkpoints SET tx_id = 0, position = 0");
    sql.execute(store).await.unwrap();
}

async fn replaying_handled_batches_changes_nothing(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let dev = ctx("acme", Role::Developer);
    domain
        .environment(&admin("acme"), &id("prod"), register("Production"))
        .await
        .unwrap();
    linked_workflow(&domain).await;
    let mut runner = ReactorRuntime::standard(&domain, options());
    // incident 1: reserved (opened by the reactor), closed (released by it)
    let reserve = |incident: &str, affected| EnvironmentCommand::ReserveIncidentSlot {
        incident_id: id(incident),
        opening: Some(opening(affected)),
    };
    domain
        .environment(&ctx("acme", Role::System), &id("prod"), reserve("inc-1", 1))
        .await
        .unwrap();
    step_to(&mut runner, &t.store, head(&t.store).await).await;
    let close = IncidentCommand::Close {
        reason: Some("fixed".into()),
        resolution_type: Some(ResolutionType::Replace),
    };
    // the close alone (`Domain::incident` would release the slot itself)
    domain
        .bus()
        .execute::<DriftIncident, _>(&admin("acme"), &[&id("inc-1")], close, false, &())
        .await
        .unwrap();
    step_to(&mut runner, &t.store, head(&t.store).await).await;
    // incident 2: reserved and opened, still active
    domain
        .environment(&ctx("acme", Role::System), &id("prod"), reserve("inc-2", 2))
        .await
        .unwrap();
    // wf1 unlinked (released), then linked again: it holds the slot by right
    domain
        .mapping(
            &dev,
            &id("prod"),
            &id("wf1"),
            MappingCommand::Unlink { reason: None },
        )
        .await
        .unwrap();
    step_to(&mut runner, &t.store, head(&t.store).await).await;
    assert_eq!(slot_holder(&domain).await, None);
    domain
        .mapping(&dev, &id("prod"), &id("wf1"), link())
        .await
        .unwrap();
    step_to(&mut runner, &t.store, head(&t.store).await).await;

    let env = load::<Environment>(&domain, "acme:prod").await;
    assert_eq!(env.active_incident.as_deref(), Some("inc-2"));
    assert!(load::<DriftIncident>(&domain, "acme:inc-2").await.opened);
    assert_eq!(
        load::<DriftIncident>(&domain, "acme:inc-1").await.status,
        IncidentStatus::Closed
    );
    assert_eq!(slot_holder(&domain).await.as_deref(), Some("wf1"));
    let before = t
        .store
        .read_after(eventstore::LogCursor::START, 10_000)
        .await
        .unwrap();
    let skipped_before: i64 = runner
        .handle()
        .status()
        .iter()
        .map(|s| s.events_skipped)
        .sum();
    let handled_before: i64 = runner
        .handle()
        .status()
        .iter()
        .map(|s| s.events_handled)
        .sum();
    assert!(
        handled_before >= 4,
        "the guard: the reactors did act ({handled_before})"
    );
    drop(runner);

    // crash after the effects, before the checkpoints: everything is replayed
    rewind_reactors(&t.store).await;
    let mut replay = ReactorRuntime::standard(&domain, options());
    step_to(&mut replay, &t.store, head(&t.store).await).await;
    let after = t
        .store
        .read_after(eventstore::LogCursor::START, 10_000)
        .await
        .unwrap();
    assert_eq!(after.len(), before.len(), "the replay appended nothing");
    assert_eq!(after, before);
    let status = replay.handle().status();
    assert!(status.iter().all(|s| s.blocked.is_none()), "{status:?}");
    let skipped: i64 = status.iter().map(|s| s.events_skipped).sum();
    assert!(
        skipped >= skipped_before + 4,
        "every replayed event was recognised as done ({skipped_before} → {skipped})"
    );
    // the slots are where they were: wf1's re-link was not undone by its old unlink
    assert_eq!(slot_holder(&domain).await.as_deref(), Some("wf1"));
    assert_eq!(
        load::<Environment>(&domain, "acme:prod")
            .await
            .active_incident
            .as_deref(),
        Some("inc-2")
    );
}

/// A batched reactor's checkpoint never passes an event before its flush made the
/// effect happen: a failed flush blocks the batch at its first event, and the retry
/// reacts to the whole batch again and flushes it, once.
async fn a_batched_reactor_passes_nothing_before_its_flush(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    let positions = register_environments(&domain, "b", 5).await;
    wait_readable(&t.store, 5).await;
    let flushed = Arc::new(Mutex::new(vec![]));
    let reactor = Batched {
        queued: Mutex::new(vec![]),
        flushed: flushed.clone(),
        failures: AtomicU32::new(1),
    };
    let mut runner = ReactorRuntime::new(
        t.store.clone(),
        vec![Arc::new(reactor)],
        options(),
        Reactors::new(t.store.clone()),
    );
    // one batch, one failed flush: blocked at the first event, nothing passed
    assert_eq!(runner.step().await.unwrap(), Step::Idle);
    let status = runner.handle().status().remove(0);
    let blocked = status.blocked.clone().expect("blocked by the flush");
    assert_eq!(blocked.position, positions[0]);
    assert!(blocked.error.contains("the flush failed"), "{blocked:?}");
    assert!(status.checkpoint.position < positions[0]);
    assert_eq!(status.events_handled, 0);
    assert!(flushed.lock().unwrap().is_empty());
    // the retry: the whole batch again, flushed once, in order
    let (handle, task) = runner.spawn();
    let _task = AbortOnDrop(task);
    handle
        .wait_for(*positions.last().unwrap(), WAIT)
        .await
        .unwrap();
    assert_eq!(*flushed.lock().unwrap(), positions);
    let status = handle.status().remove(0);
    assert_eq!(status.blocked, None);
    assert_eq!(status.events_handled, 5);
}
