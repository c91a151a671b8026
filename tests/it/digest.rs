//! The log digest: a log sealed through the real command path, then tampered with by
//! raw SQL as an attacker with write access would, and `verify` (library and binary)
//! must say so. One test per tampering the hash chains alone cannot see, plus the
//! limits: a full rewrite passes plain `verify` and fails `verify --digest`.

use std::time::{Duration, Instant};

use aggregates::environment::{Environment, EnvironmentCommand, SyncKind};
use eventstore::chain::{ChainedEvent, GENESIS, HASH_KEY};
use eventstore::digest::{DigestCheckError, ExternalDigest, LogId, RunningDigest};
use eventstore::{LogCursor, PgStore, SqliteStore, Store, StoredEvent, VerifyReport};
use serde_json::{json, Map, Value};
use sqlx::Executor;
use workflowops::command::bus::CommandError;

use crate::conformance::{read_all, register};
use crate::support::{admin, both_backends, id, Kind, TestStore};

both_backends!(
    an_intact_sealed_log_verifies,
    deleting_the_last_event_of_a_stream_is_caught,
    deleting_a_whole_stream_is_caught,
    an_edit_with_recomputed_hashes_is_caught,
    an_inserted_event_is_caught,
    a_reordered_event_is_caught,
    a_full_rewrite_passes_plain_verify_but_not_an_external_digest,
    bad_digests_are_refused_with_exit_code_2,
    a_missing_or_forged_previous_hash_blocks_appends,
    loads_replay_only_new_events_whoever_appended_them,
    a_command_after_an_own_commit_skips_the_read_but_not_the_check,
    a_creation_skips_the_read_but_not_the_empty_check,
    the_digest_command_round_trips_into_verify,
    the_sealer_keeps_the_head_and_seals_in_serve,
    log_digest_through_graphql_seals_and_verifies,
);

/// Events of the log built by [`build_log`], by index.
const PROD_1: usize = 0;
const STAGE_1: usize = 1;
const DEV_1: usize = 2;
const GLOBEX_1: usize = 3;
const STAGE_2: usize = 4;
const PROD_2: usize = 5;
const EVENTS: usize = 6;

/// Six events through the command path: acme's prod (2 events, the last one last in
/// the log), stage (2), dev (1), and globex's prod (1).
async fn build_log(t: &TestStore) -> Vec<StoredEvent> {
    let domain = t.domain();
    let alice = admin("acme");
    domain
        .environment(&alice, &id("prod"), register("Production"))
        .await
        .unwrap();
    domain
        .environment(&alice, &id("stage"), register("Staging"))
        .await
        .unwrap();
    domain
        .environment(&alice, &id("dev"), register("Development"))
        .await
        .unwrap();
    domain
        .environment(&admin("globex"), &id("prod"), register("Globex"))
        .await
        .unwrap();
    domain
        .environment(&alice, &id("stage"), record_sync())
        .await
        .unwrap();
    let deactivate = EnvironmentCommand::Deactivate {
        reason: Some("maintenance".into()),
    };
    domain
        .environment(&alice, &id("prod"), deactivate)
        .await
        .unwrap();
    let events = read_all(&t.store, EVENTS).await;
    let shape: Vec<(&str, i64)> = events
        .iter()
        .map(|e| (e.aggregate_id.as_str(), e.sequence))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("acme:prod", 1),
            ("acme:stage", 1),
            ("acme:dev", 1),
            ("globex:prod", 1),
            ("acme:stage", 2),
            ("acme:prod", 2),
        ]
    );
    events
}

fn record_sync() -> EnvironmentCommand {
    EnvironmentCommand::RecordSync {
        kind: SyncKind::Environment,
        workflows_seen: 3,
    }
}

/// Seals on demand until the seal covers `expected` events (on PostgreSQL another
/// test's open transaction can hold the readers' horizon back for a moment).
async fn seal_all(store: &Store, expected: i64) -> ExternalDigest {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sealed = store.seal().await.unwrap();
        if sealed.seal.events >= expected || Instant::now() > deadline {
            assert_eq!(sealed.seal.events, expected, "the seal covers the log");
            return sealed.external().parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A built and sealed log: its events and the digest taken.
async fn sealed_log(t: &TestStore) -> (Vec<StoredEvent>, ExternalDigest) {
    let events = build_log(t).await;
    let digest = seal_all(&t.store, EVENTS as i64).await;
    assert_eq!(digest.position, events[PROD_2].position);
    let report = t.store.verify().await.unwrap();
    assert!(report.ok, "the untouched log verifies: {report:?}");
    let digest_part = report.digest.as_ref().unwrap();
    assert!(digest_part.seals_checked >= 1 && digest_part.head_checked);
    (events, digest)
}

/// Runs raw SQL (possibly several statements) as an attacker would (or a test
/// setting the database up).
pub(crate) async fn exec(store: &Store, sql: &str) {
    match store {
        Store::Postgres(PgStore { pool, .. }) => {
            pool.execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        Store::Sqlite(SqliteStore { pool, .. }) => {
            pool.execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

async fn try_exec(store: &Store, sql: &str) -> Result<(), sqlx::Error> {
    match store {
        Store::Postgres(PgStore { pool, .. }) => pool.execute(sql).await.map(|_| ()),
        Store::Sqlite(SqliteStore { pool, .. }) => pool.execute(sql).await.map(|_| ()),
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn json_literal(store: &Store, value: &Value) -> String {
    match store {
        Store::Postgres(_) => format!("{}::json", quote(&value.to_string())),
        Store::Sqlite(_) => quote(&value.to_string()),
    }
}

/// Replaces an event's payload and metadata in place.
async fn rewrite(store: &Store, position: i64, payload: &Value, metadata: &Map<String, Value>) {
    let metadata = Value::Object(metadata.clone());
    exec(
        store,
        &format!(
            "UPDATE events SET payload = {}, metadata = {} WHERE position = {position}",
            json_literal(store, payload),
            json_literal(store, &metadata)
        ),
    )
    .await;
}

/// An aggregate's events with hashes recomputed in sequence order (what anyone can do:
/// the chain has no secret).
fn rechain(events: &mut [StoredEvent]) {
    let mut previous = GENESIS.to_string();
    for event in events.iter_mut() {
        event.metadata.remove(HASH_KEY);
        let hash = ChainedEvent {
            aggregate_type: &event.aggregate_type,
            aggregate_id: &event.aggregate_id,
            sequence: event.sequence,
            event_type: &event.event_type,
            event_version: &event.event_version,
            payload: &event.payload,
            metadata: &event.metadata,
        }
        .hash(&previous);
        event.metadata.insert(HASH_KEY.into(), json!(hash));
        previous = hash;
    }
}

/// Edits acme:prod's first event and recomputes both of its hashes.
async fn forge_prod_with_recomputed_hashes(t: &TestStore) {
    let mut prod = t
        .store
        .aggregate_events("environment", "acme:prod")
        .await
        .unwrap();
    assert_eq!(prod.len(), 2);
    assert!(
        prod[0].payload.get("name").is_some(),
        "{:?}",
        prod[0].payload
    );
    prod[0].payload["name"] = json!("Forged");
    rechain(&mut prod);
    for event in &prod {
        rewrite(&t.store, event.position, &event.payload, &event.metadata).await;
    }
}

/// Runs the binary against the store; returns (exit code, stdout, stderr).
fn cli(t: &TestStore, args: &[&str]) -> (i32, String, String) {
    let output = crate::cli::workflowops()
        .args(args)
        .env("DATABASE_URL", &t.url)
        .output()
        .expect("run workflowops");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    )
}

/// The chains are intact (the tampering is invisible to them), the digest is not:
/// the library names a mismatching seal or the head, and `verify` exits 1.
async fn assert_only_the_digest_catches_it(t: &TestStore, what: &str) -> VerifyReport {
    let report = t.store.verify().await.unwrap();
    assert!(
        report.broken.is_empty() && report.first_broken_position.is_none(),
        "{what}: the chains alone do not see it: {report:?}"
    );
    assert!(!report.ok, "{what}: verify must fail: {report:?}");
    let digest = report.digest.as_ref().unwrap();
    assert!(!digest.ok);
    let mismatch = digest.first_mismatch.as_ref().expect("a first mismatch");
    assert!(
        ["seal", "head"].contains(&mismatch.checkpoint.as_str()) && !mismatch.reason.is_empty(),
        "{what}: {mismatch:?}"
    );
    let (code, stdout, stderr) = cli(t, &["verify"]);
    assert_eq!(code, 1, "{what}: verify exits 1: {stderr}");
    assert!(stderr.contains("log digest mismatch"), "{what}: {stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(
        json["digest"]["first_mismatch"]["position"],
        mismatch.position
    );
    for key in ["checked_events", "first_broken_position", "broken"] {
        assert!(json.get(key).is_some(), "the report keeps {key}: {json}");
    }
    report
}

/// Seal rows, counted straight from the table.
async fn seal_rows(store: &Store) -> i64 {
    const SQL: &str = "SELECT COUNT(*) FROM log_seals";
    match store {
        Store::Postgres(PgStore { pool, .. }) => sqlx::query_scalar(SQL).fetch_one(pool).await,
        Store::Sqlite(SqliteStore { pool, .. }) => sqlx::query_scalar(SQL).fetch_one(pool).await,
    }
    .unwrap()
}

async fn an_intact_sealed_log_verifies(kind: Kind) {
    let t = TestStore::new(kind).await;
    // the empty log's digest is D_0 at position 0; nothing is recorded for it
    let empty = t.store.seal().await.unwrap();
    assert_eq!((empty.seal.cursor.position, empty.seal.events), (0, 0));
    assert_eq!(seal_rows(&t.store).await, 0);
    let genesis: ExternalDigest = empty.external().parse().unwrap();
    assert_eq!(
        empty.seal.digest,
        RunningDigest::genesis(&genesis.log_id).hex()
    );

    let (events, digest) = sealed_log(&t).await;
    assert!(seal_rows(&t.store).await >= 1);
    // more events after the seal: the log still verifies, and the head catches up
    t.domain()
        .environment(&admin("acme"), &id("stage"), record_sync())
        .await
        .unwrap();
    let after = seal_all(&t.store, EVENTS as i64 + 1).await;
    assert!(after.position > digest.position);

    let seals = t.store.seals(LogCursor::START, 100).await.unwrap();
    assert!(seals.len() >= 2, "two on-demand seals at least: {seals:?}");
    assert!(seals.iter().all(|s| s.kind == "on_demand"));
    let report = t.store.verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked_events, EVENTS as u64 + 1);
    let part = report.digest.unwrap();
    assert_eq!(part.events, EVENTS as u64 + 1, "every event digested");
    assert_eq!(part.seals_checked, seals.len() as u64);
    assert!(part.head_checked);
    assert_eq!(part.sealed_through, Some(after.position));
    assert_eq!(part.log_id, Some(digest.log_id.to_string()));
    // an earlier digest still proves the log up to its position
    for earlier in [&digest, &genesis] {
        let report = t.store.verify_with_digest(earlier).await.unwrap();
        assert!(report.ok, "{report:?}");
        assert!(report.digest.unwrap().external.unwrap().ok);
    }
    let (code, _, stderr) = cli(&t, &["verify"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("matches {} seals and the head", seals.len())),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&t, &["verify", "--digest", &digest.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(events.len() == EVENTS);

    // seals are immutable
    let refused = try_exec(&t.store, "UPDATE log_seals SET events = events + 1").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("immutable")),
        "{refused:?}"
    );
    let refused = try_exec(&t.store, "DELETE FROM log_seals").await;
    assert!(refused.is_err(), "seals cannot be deleted");
}

async fn deleting_the_last_event_of_a_stream_is_caught(kind: Kind) {
    let t = TestStore::new(kind).await;
    let (events, digest) = sealed_log(&t).await;
    // acme:prod's last event is also the log's last: the chain has nothing after it
    let victim = &events[PROD_2];
    exec(
        &t.store,
        &format!("DELETE FROM events WHERE position = {}", victim.position),
    )
    .await;
    let report = assert_only_the_digest_catches_it(&t, "deleted last event").await;
    let mismatch = report.digest.unwrap().first_mismatch.unwrap();
    assert_eq!(mismatch.position, victim.position);
    assert!(mismatch.reason.contains("covers 6 events"), "{mismatch:?}");
    // the external digest names a position that is gone: tampering (1), not bad
    // input, because the seals in the database show it
    let (code, _, stderr) = cli(&t, &["verify", "--digest", &digest.to_string()]);
    assert_eq!(code, 1, "{stderr}");
}

async fn deleting_a_whole_stream_is_caught(kind: Kind) {
    let t = TestStore::new(kind).await;
    let (events, _) = sealed_log(&t).await;
    exec(
        &t.store,
        "DELETE FROM events WHERE aggregate_id = 'acme:stage'",
    )
    .await;
    assert_eq!(t.store.event_count().await.unwrap(), EVENTS as i64 - 2);
    let report = assert_only_the_digest_catches_it(&t, "deleted stream").await;
    let mismatch = report.digest.unwrap().first_mismatch.unwrap();
    assert!(mismatch.position >= events[STAGE_2].position);
}

async fn an_edit_with_recomputed_hashes_is_caught(kind: Kind) {
    let t = TestStore::new(kind).await;
    sealed_log(&t).await;
    forge_prod_with_recomputed_hashes(&t).await;
    let report = assert_only_the_digest_catches_it(&t, "edit + recomputed hashes").await;
    let mismatch = report.digest.unwrap().first_mismatch.unwrap();
    assert!(mismatch.reason.contains("does not match"), "{mismatch:?}");
}

async fn an_inserted_event_is_caught(kind: Kind) {
    let t = TestStore::new(kind).await;
    let (events, _) = sealed_log(&t).await;
    // a new stream with a perfectly valid chain, copied from acme:dev's registration
    let mut ghost = events[DEV_1].clone();
    ghost.aggregate_id = "acme:ghost".into();
    ghost.payload["name"] = json!("Ghost");
    let mut one = [ghost];
    rechain(&mut one);
    let ghost = &one[0];
    let columns =
        "aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata";
    let values = format!(
        "{}, {}, 1, {}, {}, {}, {}",
        quote(&ghost.aggregate_type),
        quote(&ghost.aggregate_id),
        quote(&ghost.event_type),
        quote(&ghost.event_version),
        json_literal(&t.store, &ghost.payload),
        json_literal(&t.store, &Value::Object(ghost.metadata.clone())),
    );
    // placed right after acme:stage's first event, well before the head
    let after = &events[STAGE_1];
    match &t.store {
        Store::Sqlite(_) => {
            let at = after.position + 1;
            exec(
                &t.store,
                &format!(
                    "UPDATE events SET position = -position WHERE position >= {at};
                     UPDATE events SET position = 1 - position WHERE position < 0;
                     INSERT INTO events ({columns}, position) VALUES ({values}, {at});"
                ),
            )
            .await;
        }
        Store::Postgres(_) => {
            // same transaction id as that event, a free position: between it and
            // the next transaction's events in (tx_id, position) order
            let position = events[PROD_2].position + 1000;
            exec(
                &t.store,
                &format!(
                    "INSERT INTO events ({columns}, position, tx_id) OVERRIDING SYSTEM VALUE \
                     VALUES ({values}, {position}, '{}'::xid8)",
                    after.tx_id.unwrap()
                ),
            )
            .await;
        }
    }
    let order: Vec<String> = read_all(&t.store, EVENTS + 1)
        .await
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(
        order[2], "acme:ghost",
        "inserted before the head: {order:?}"
    );
    assert_only_the_digest_catches_it(&t, "inserted event").await;
}

async fn a_reordered_event_is_caught(kind: Kind) {
    let t = TestStore::new(kind).await;
    let (events, _) = sealed_log(&t).await;
    let (a, b) = (&events[STAGE_1], &events[GLOBEX_1]);
    assert_ne!(a.aggregate_id, b.aggregate_id);
    match &t.store {
        Store::Sqlite(_) => {
            exec(
                &t.store,
                &format!(
                    "UPDATE events SET position = -1 WHERE position = {a};
                     UPDATE events SET position = {a} WHERE position = {b};
                     UPDATE events SET position = {b} WHERE position = -1;",
                    a = a.position,
                    b = b.position
                ),
            )
            .await;
        }
        Store::Postgres(_) => {
            // positions are an identity column: move the rows out and back in, each
            // in the other's place (transaction id and position)
            exec(
                &t.store,
                &format!(
                    "BEGIN;
                     CREATE TEMP TABLE moved AS SELECT * FROM events WHERE position IN ({a}, {b});
                     DELETE FROM events WHERE position IN ({a}, {b});
                     INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                         event_version, payload, metadata, position, tx_id, recorded_at)
                       OVERRIDING SYSTEM VALUE
                       SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
                         payload, metadata,
                         CASE WHEN position = {a} THEN {b} ELSE {a} END,
                         CASE WHEN position = {a} THEN '{tb}'::xid8 ELSE '{ta}'::xid8 END,
                         recorded_at
                       FROM moved;
                     DROP TABLE moved;
                     COMMIT;",
                    a = a.position,
                    b = b.position,
                    ta = a.tx_id.unwrap(),
                    tb = b.tx_id.unwrap(),
                ),
            )
            .await;
        }
    }
    let order: Vec<String> = read_all(&t.store, EVENTS)
        .await
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(order[STAGE_1], "globex:prod", "swapped: {order:?}");
    assert_eq!(order[GLOBEX_1], "acme:stage", "swapped: {order:?}");
    assert_only_the_digest_catches_it(&t, "reordered events").await;
}

async fn a_full_rewrite_passes_plain_verify_but_not_an_external_digest(kind: Kind) {
    let t = TestStore::new(kind).await;
    let (_, digest) = sealed_log(&t).await;
    forge_prod_with_recomputed_hashes(&t).await;
    // The attacker also recomputes the digest tables (dropping the seals' guard).
    match &t.store {
        Store::Postgres(_) => {
            exec(
                &t.store,
                "DROP TRIGGER log_seals_immutable ON log_seals; \
                 DROP TRIGGER log_seals_no_truncate ON log_seals;",
            )
            .await
        }
        Store::Sqlite(_) => {
            exec(
                &t.store,
                "DROP TRIGGER log_seals_no_update; DROP TRIGGER log_seals_no_delete;",
            )
            .await
        }
    }
    let log_id: LogId = t.store.log_id().await.unwrap().unwrap();
    let seals = t.store.seals(LogCursor::START, 100).await.unwrap();
    let head_cursor = t.store.digest_head().await.unwrap().unwrap().cursor;
    assert!(!seals.is_empty());
    let mut state = RunningDigest::genesis(&log_id);
    let mut rewritten = 0;
    for event in read_all(&t.store, EVENTS).await {
        state.push(event.cursor(), event.hash().unwrap());
        let (tx_id, position) = (event.cursor().tx_id, event.position);
        if seals.iter().any(|s| s.cursor == event.cursor()) {
            exec(
                &t.store,
                &format!(
                    "UPDATE log_seals SET digest = '{}', events = {} \
                     WHERE tx_id = {tx_id} AND position = {position}",
                    state.hex(),
                    state.events
                ),
            )
            .await;
            rewritten += 1;
        }
        if head_cursor == event.cursor() {
            exec(
                &t.store,
                &format!(
                    "UPDATE log_digest_head SET digest = '{}', events = {}",
                    state.hex(),
                    state.events
                ),
            )
            .await;
            rewritten += 1;
        }
    }
    assert_eq!(
        rewritten,
        seals.len() + 1,
        "every seal and the head rewritten"
    );

    // the documented limit: everything in the database agrees again
    let report = t.store.verify().await.unwrap();
    assert!(report.ok, "a full rewrite passes plain verify: {report:?}");
    assert_eq!(cli(&t, &["verify"]).0, 0);
    // … but not the digest kept outside
    let report = t.store.verify_with_digest(&digest).await.unwrap();
    assert!(!report.ok, "{report:?}");
    let external = report.digest.unwrap().external.unwrap();
    assert!(!external.ok);
    assert!(
        external.reason.as_deref().unwrap().contains("not the one"),
        "{external:?}"
    );
    let (code, stdout, stderr) = cli(&t, &["verify", "--digest", &digest.to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the digest given does not match"),
        "{stderr}"
    );
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["digest"]["external"]["ok"], false);
}

async fn bad_digests_are_refused_with_exit_code_2(kind: Kind) {
    let t = TestStore::new(kind).await;
    let (events, digest) = sealed_log(&t).await;
    let good = digest.to_string();
    let (hex_part, _) = good.split_once('@').unwrap();
    let mut cases: Vec<(String, &str)> = vec![
        ("nonsense".into(), "no `@`"),
        (
            format!("{}@{}", &hex_part[..90], digest.position),
            "not 96 hex",
        ),
        (
            format!("{}xyz@{}", &hex_part[..93], digest.position),
            "not hexadecimal",
        ),
        (format!("{hex_part}@minus-one"), "position"),
        (format!("{hex_part}@-3"), "position"),
    ];
    // a position with no event: past the end of the log
    let missing = events[PROD_2].position + 1000;
    cases.push((format!("{hex_part}@{missing}"), "no event at position"));
    // a digest of another database (another log id), same shape
    let other = TestStore::new(kind).await;
    build_log(&other).await;
    let foreign = seal_all(&other.store, EVENTS as i64).await;
    assert_ne!(foreign.log_id, digest.log_id);
    cases.push((foreign.to_string(), "another database"));

    for (input, says) in &cases {
        let (code, stdout, stderr) = cli(&t, &["verify", "--digest", input]);
        assert_eq!(code, 2, "{input}: {stderr}");
        assert!(
            stderr.contains(says),
            "{input}: expected {says:?} in {stderr}"
        );
        assert!(stdout.is_empty(), "{input}: no report: {stdout}");
    }
    assert!(matches!(
        t.store.verify_with_digest(&foreign).await,
        Err(DigestCheckError::OtherLog { .. })
    ));
    let nowhere = ExternalDigest {
        position: missing,
        ..digest
    };
    assert!(matches!(
        t.store.verify_with_digest(&nowhere).await,
        Err(DigestCheckError::NoEvent(p)) if p == missing
    ));
    // the real one still passes: the refusals were about the input
    assert_eq!(cli(&t, &["verify", "--digest", &good]).0, 0);
}

async fn a_missing_or_forged_previous_hash_blocks_appends(kind: Kind) {
    let t = TestStore::new(kind).await;
    let (events, _) = sealed_log(&t).await;
    let drop_hash = |position: i64| {
        match &t.store {
        Store::Postgres(_) => format!(
            "UPDATE events SET metadata = (metadata::jsonb - 'hash')::json WHERE position = {position}"
        ),
        Store::Sqlite(_) => format!(
            "UPDATE events SET metadata = json_remove(metadata, '$.hash') WHERE position = {position}"
        ),
    }
    };
    // acme:prod's first event loses its hash: its successor cannot be chained
    exec(&t.store, &drop_hash(events[PROD_1].position)).await;
    let report = t.store.verify().await.unwrap();
    assert!(!report.ok);
    let reasons: Vec<(i64, &str)> = report
        .broken
        .iter()
        .map(|b| (b.position, b.reason.as_str()))
        .collect();
    assert!(
        reasons.contains(&(events[PROD_1].position, "no hash in metadata")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(
            events[PROD_2].position,
            "previous event has no valid chain hash; cannot chain"
        )),
        "{reasons:?}"
    );
    assert_eq!(report.first_broken_position, Some(events[PROD_1].position));
    let (code, _, stderr) = cli(&t, &["verify"]);
    assert_eq!(code, 1, "{stderr}");

    // acme:stage's last event loses its hash: the bus refuses to chain after it
    exec(&t.store, &drop_hash(events[STAGE_2].position)).await;
    let before = t.store.event_count().await.unwrap();
    let refused = t
        .domain()
        .environment(&admin("acme"), &id("stage"), record_sync())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            CommandError::Damaged(eventstore::CommitError::BrokenChain { .. })
        ) && refused.to_string().contains("no valid chain hash"),
        "{refused:?}"
    );
    assert_eq!(
        t.store.event_count().await.unwrap(),
        before,
        "nothing appended"
    );
    // a malformed (not just missing) hash is refused alike
    let malformed = match &t.store {
        Store::Postgres(_) => format!(
            "UPDATE events SET metadata = jsonb_set(metadata::jsonb, '{{hash}}', '\"ABC\"')::json \
             WHERE position = {}",
            events[GLOBEX_1].position
        ),
        Store::Sqlite(_) => format!(
            "UPDATE events SET metadata = json_set(metadata, '$.hash', 'ABC') WHERE position = {}",
            events[GLOBEX_1].position
        ),
    };
    exec(&t.store, &malformed).await;
    let refused = t
        .domain()
        .environment(&admin("globex"), &id("prod"), record_sync())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            CommandError::Damaged(eventstore::CommitError::BrokenChain { .. })
        ) && refused.to_string().contains("no valid chain hash"),
        "{refused:?}"
    );
    assert_eq!(
        t.store.event_count().await.unwrap(),
        before,
        "nothing appended"
    );
    // untouched aggregates still take commands
    t.domain()
        .environment(&admin("acme"), &id("dev"), record_sync())
        .await
        .unwrap();

    // a forged hash (well formed, but not the hash of its event) is refused too:
    // nothing is chained after it
    let forge = match &t.store {
        Store::Postgres(_) => "UPDATE events SET metadata = jsonb_set(metadata::jsonb, '{hash}', \
             to_jsonb(repeat('a', 64)))::json \
             WHERE aggregate_id = 'acme:dev' AND sequence = 2"
            .to_string(),
        Store::Sqlite(_) => "UPDATE events SET metadata = json_set(metadata, '$.hash', \
             'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa') \
             WHERE aggregate_id = 'acme:dev' AND sequence = 2"
            .to_string(),
    };
    exec(&t.store, &forge).await;
    let before = t.store.event_count().await.unwrap();
    let refused = t
        .domain()
        .environment(&admin("acme"), &id("dev"), record_sync())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            CommandError::Damaged(eventstore::CommitError::ForgedChain { sequence: 2, .. })
        ) && refused.to_string().contains("does not match its content"),
        "{refused:?}"
    );
    assert_eq!(
        t.store.event_count().await.unwrap(),
        before,
        "nothing appended"
    );
}

/// The aggregate cache (`eventstore`'s `cache`): a load replays only the events
/// appended since this process last saw the aggregate, whichever process appended
/// them, and a stream changed under it (its last event gone) is replayed in full.
async fn loads_replay_only_new_events_whoever_appended_them(kind: Kind) {
    let t = TestStore::new(kind).await;
    let replica = Store::connect(&t.url, 4).await.unwrap();
    let here = t.bus();
    let there = workflowops::command::bus::CommandBus::new(replica.clone());
    let alice = admin("acme");
    let aggregate = "acme:prod";
    here.execute::<Environment, _>(&alice, &[&id("prod")], register("Production"), false, &())
        .await
        .unwrap();
    // commands alternate between the two processes: each one's cached state is
    // behind by the other's last command
    for round in 0..12 {
        let bus = if round % 2 == 0 { &there } else { &here };
        let command = EnvironmentCommand::RecordSync {
            kind: SyncKind::Environment,
            workflows_seen: round,
        };
        bus.execute::<Environment, _>(&alice, &[&id("prod")], command, false, &())
            .await
            .unwrap();
    }
    assert!(t.store.cached_aggregates() >= 1 && replica.cached_aggregates() >= 1);
    // a third process, with nothing cached, replays the whole stream: the same
    let fresh = Store::connect(&t.url, 1).await.unwrap();
    let full = fresh.load::<Environment>(aggregate).await.unwrap();
    assert_eq!(full.sequence(), 13);
    for store in [&t.store, &replica] {
        let loaded = store.load::<Environment>(aggregate).await.unwrap();
        assert_eq!(loaded.sequence(), 13);
        assert_eq!(
            serde_json::to_value(loaded.state()).unwrap(),
            serde_json::to_value(full.state()).unwrap()
        );
    }
    // and a command chains onto what the other process appended
    here.execute::<Environment, _>(&alice, &[&id("prod")], record_sync(), false, &())
        .await
        .unwrap();
    assert!(t.store.verify().await.unwrap().ok);

    // the stream's last event removed under the caches: both replay in full
    exec(
        &t.store,
        &format!("DELETE FROM events WHERE aggregate_id = '{aggregate}' AND sequence = 14"),
    )
    .await;
    let full = fresh.load::<Environment>(aggregate).await.unwrap();
    assert_eq!(full.sequence(), 13);
    for store in [&t.store, &replica] {
        let loaded = store.load::<Environment>(aggregate).await.unwrap();
        assert_eq!(loaded.sequence(), 13, "not the cached 14");
        assert_eq!(
            serde_json::to_value(loaded.state()).unwrap(),
            serde_json::to_value(full.state()).unwrap()
        );
    }
    // commands go on from there
    there
        .execute::<Environment, _>(&alice, &[&id("prod")], record_sync(), false, &())
        .await
        .unwrap();
    assert_eq!(
        fresh
            .load::<Environment>(aggregate)
            .await
            .unwrap()
            .sequence(),
        14
    );
}

/// A command on an aggregate whose last event this process wrote is decided on the
/// state it kept, without reading the stream (on both backends: decisions 58, 76). Its
/// append checks in the same statement that the event it follows is still stored
/// exactly as written: altered in any byte, nothing is stored and the command is
/// decided again on a read, which accepts a harmless change and refuses a forgery.
async fn a_command_after_an_own_commit_skips_the_read_but_not_the_check(kind: Kind) {
    let t = TestStore::new(kind).await;
    let bus = t.bus();
    let alice = admin("acme");
    let aggregate = "acme:prod";
    let sync = |bus: &workflowops::command::bus::CommandBus| {
        let (bus, alice) = (bus.clone(), alice.clone());
        async move {
            bus.execute::<Environment, _>(&alice, &[&id("prod")], record_sync(), false, &())
                .await
        }
    };
    bus.execute::<Environment, _>(&alice, &[&id("prod")], register("Production"), false, &())
        .await
        .unwrap();
    sync(&bus).await.unwrap();
    let loaded = t
        .store
        .load_for_command::<Environment>(aggregate)
        .await
        .unwrap();
    assert!(loaded.is_unread());
    assert_eq!(loaded.sequence(), 2);
    let edit = |sequence: i64, from: &str, to: &str| {
        format!(
            "UPDATE events SET payload = {} \
             WHERE aggregate_id = '{aggregate}' AND sequence = {sequence}",
            match &t.store {
                Store::Postgres(_) => format!(
                    "replace(payload::text, {}, {})::json",
                    quote(from),
                    quote(to)
                ),
                Store::Sqlite(_) => format!("replace(payload, {}, {})", quote(from), quote(to)),
            },
        )
    };

    // a byte that changes nothing hashed (JSON whitespace): the append's check
    // fails, the command is decided again on a read, which chains after it
    exec(&t.store, &edit(2, "{", "{ ")).await;
    let committed = sync(&bus).await.unwrap();
    assert_eq!(committed.sequence, 3);
    assert!(t.store.verify().await.unwrap().ok);
    let stored = t
        .store
        .aggregate_events("environment", aggregate)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);

    // a forged payload under the hash this process wrote: nothing is chained after it
    assert!(t
        .store
        .load_for_command::<Environment>(aggregate)
        .await
        .unwrap()
        .is_unread());
    exec(
        &t.store,
        &edit(3, "\"workflows_seen\":3", "\"workflows_seen\":4"),
    )
    .await;
    let before = t.store.event_count().await.unwrap();
    let refused = sync(&bus).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            CommandError::Damaged(eventstore::CommitError::ForgedChain { sequence: 3, .. })
        ),
        "{refused:?}"
    );
    assert_eq!(
        t.store.event_count().await.unwrap(),
        before,
        "nothing appended"
    );
    // and the next load reads (the kept state was dropped)
    assert!(!t
        .store
        .load_for_command::<Environment>(aggregate)
        .await
        .unwrap()
        .is_unread());
}

/// A command that creates its aggregate, on an aggregate this process keeps nothing
/// for, is decided on the empty state without a read (decision 77). Its append checks
/// in the same statement that no event of the aggregate is stored, not only that
/// sequence 1 is free: alone, and in shared groups of one-event and of two-event
/// commands (each backend's statements). If one is, nothing of that command is
/// stored, and the bus decides it again on a read, which refuses it.
async fn a_creation_skips_the_read_but_not_the_empty_check(kind: Kind) {
    use aggregates::environment::EnvironmentEvent;
    let t = TestStore::new(kind).await;
    // Another process registers `taken`, and `gapped`, whose first event is then
    // deleted: its sequence 1 is free, its stream is not empty.
    let other = Store::connect(&t.url, 2).await.unwrap();
    let other_bus = workflowops::command::bus::CommandBus::new(other.clone());
    for env in ["taken", "gapped"] {
        other_bus
            .execute::<Environment, _>(&admin("acme"), &[&id(env)], register(env), false, &())
            .await
            .unwrap();
    }
    other_bus
        .execute::<Environment, _>(&admin("acme"), &[&id("gapped")], record_sync(), false, &())
        .await
        .unwrap();
    exec(
        &t.store,
        "DELETE FROM events WHERE aggregate_id = 'acme:gapped' AND sequence = 1",
    )
    .await;
    let stream = |env: &'static str| {
        let store = t.store.clone();
        async move {
            store
                .aggregate_events("environment", &format!("acme:{env}"))
                .await
                .unwrap()
                .iter()
                .map(|e| e.sequence)
                .collect::<Vec<i64>>()
        }
    };
    let registered = |name: &str| EnvironmentEvent::Registered {
        name: name.into(),
        class: aggregates::environment::EnvironmentClass::Dev,
        n8n_base_url: "https://n8n.example.com".into(),
        git: None,
        n8n_secret_ref: None,
        git_secret_ref: None,
    };
    let synced = || EnvironmentEvent::SyncRecorded {
        kind: SyncKind::Environment,
        workflows_seen: 1,
        at: chrono::Utc::now(),
    };

    // alone
    for env in ["taken", "gapped"] {
        let loaded = t
            .store
            .load_for_creation::<Environment>(&format!("acme:{env}"))
            .await
            .unwrap();
        assert!(loaded.is_unread(), "{env}: decided without a read");
        assert_eq!(loaded.sequence(), 0);
        let before = t.store.event_count().await.unwrap();
        let result = t
            .store
            .commit(loaded, vec![registered(env)], &admin_envelope())
            .await;
        assert!(
            matches!(result, Err(eventstore::CommitError::Conflict { .. })),
            "{env}: {:?}",
            result.err()
        );
        assert_eq!(t.store.event_count().await.unwrap(), before, "{env}");
    }

    // in shared groups: one event per command, then two
    let shared = t.store.group_stats().shared;
    for events in [1usize, 2] {
        let fresh: Vec<String> = (0..8).map(|n| format!("fresh-{events}-{n}")).collect();
        let tasks: Vec<_> = fresh
            .iter()
            .map(String::as_str)
            .chain(["taken", "gapped"])
            .map(|env| {
                let (store, env) = (t.store.clone(), env.to_string());
                let mut decided = vec![registered(&env), synced()];
                decided.truncate(events);
                tokio::spawn(async move {
                    let loaded = store
                        .load_for_creation::<Environment>(&format!("acme:{env}"))
                        .await
                        .unwrap();
                    assert!(loaded.is_unread());
                    let result = store.commit(loaded, decided, &admin_envelope()).await;
                    (env, result)
                })
            })
            .collect();
        for task in tasks {
            match task.await.unwrap() {
                (env, Ok(committed)) => {
                    assert!(env.starts_with("fresh-"), "{env} was stored");
                    assert_eq!(committed.sequence, events as i64);
                }
                (env, Err(eventstore::CommitError::Conflict { .. })) => {
                    assert!(!env.starts_with("fresh-"), "{env}")
                }
                (env, Err(other)) => panic!("{env}: {other:?}"),
            }
        }
        for env in &fresh {
            let sequences: Vec<i64> = t
                .store
                .aggregate_events("environment", &format!("acme:{env}"))
                .await
                .unwrap()
                .iter()
                .map(|e| e.sequence)
                .collect();
            assert_eq!(sequences, (1..=events as i64).collect::<Vec<_>>());
        }
    }
    assert!(t.store.group_stats().shared > shared, "no group was shared");
    assert_eq!(stream("taken").await, vec![1]);
    assert_eq!(stream("gapped").await, vec![2], "nothing started over it");

    // The bus: decided first on the empty state (its append is refused), then on
    // a read, which refuses it as a read alone would have.
    let bus = t.bus();
    let appends = t.store.group_stats().appends;
    let refused = bus
        .execute::<Environment, _>(
            &admin("acme"),
            &[&id("taken")],
            register("taken"),
            false,
            &(),
        )
        .await
        .unwrap_err();
    assert!(matches!(&refused, CommandError::Refused(_)), "{refused:?}");
    assert_eq!(
        t.store.group_stats().appends,
        appends + 1,
        "decided on the empty state first"
    );
    assert_eq!(stream("taken").await, vec![1]);
    // a new aggregate: created without a read, and kept for the next command
    let committed = bus
        .execute::<Environment, _>(&admin("acme"), &[&id("new")], register("new"), false, &())
        .await
        .unwrap();
    assert_eq!(committed.sequence, 1);
    assert!(t
        .store
        .load_for_command::<Environment>("acme:new")
        .await
        .unwrap()
        .is_unread());
    other.close().await;
}

/// `acme:prod` loaded for a command: kept or read.
async fn kept_or_read(t: &TestStore) -> eventstore::Loaded<Environment> {
    t.store
        .load_for_command::<Environment>("acme:prod")
        .await
        .unwrap()
}

/// `acme:prod`'s state as this process kept it after its own commit: a command may
/// be decided on it without reading the stream.
async fn kept(t: &TestStore) -> eventstore::Loaded<Environment> {
    let loaded = kept_or_read(t).await;
    assert!(loaded.is_unread());
    loaded
}

/// A registered `acme:prod` and the state kept of it.
async fn registered_and_kept(
    kind: Kind,
) -> (
    TestStore,
    workflowops::command::bus::CommandBus,
    eventstore::Loaded<Environment>,
) {
    let t = TestStore::new(kind).await;
    let bus = t.bus();
    bus.execute::<Environment, _>(
        &admin("acme"),
        &[&id("prod")],
        register("Production"),
        false,
        &(),
    )
    .await
    .unwrap();
    let loaded = kept(&t).await;
    (t, bus, loaded)
}

fn admin_envelope() -> eventstore::Envelope {
    crate::support::envelope("acme", aggregates::kernel::command::Role::Admin)
}

fn deactivated() -> Vec<aggregates::environment::EnvironmentEvent> {
    vec![aggregates::environment::EnvironmentEvent::Deactivated {
        from: aggregates::environment::EnvironmentStatus::Active,
        reason: None,
    }]
}

/// `result` is a conflict that stored nothing (the log still holds `before` events),
/// and the kept state was dropped: the next load reads.
async fn a_conflict_that_stored_nothing<A: cqrs_es::Aggregate>(
    t: &TestStore,
    before: i64,
    result: Result<eventstore::Committed<A>, eventstore::CommitError>,
) {
    assert!(
        matches!(result, Err(eventstore::CommitError::Conflict { .. })),
        "{:?}",
        result.err()
    );
    assert_eq!(
        t.store.event_count().await.unwrap(),
        before,
        "nothing stored"
    );
    assert!(!kept_or_read(t).await.is_unread());
}

/// The append's check is on the row version, not its text (decision 68): an
/// `UPDATE` that writes the same bytes over the event this process wrote still
/// makes a commit on the kept state a conflict that stores nothing, and the bus
/// then decides the command again on a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_predecessor_written_again_with_the_same_bytes_is_a_conflict_postgres() {
    let (t, bus, loaded) = registered_and_kept(Kind::Postgres).await;
    exec(
        &t.store,
        "UPDATE events SET payload = payload, metadata = metadata \
         WHERE aggregate_id = 'acme:prod' AND sequence = 1",
    )
    .await;
    let before = t.store.event_count().await.unwrap();
    let result = t
        .store
        .commit(loaded, deactivated(), &admin_envelope())
        .await;
    a_conflict_that_stored_nothing(&t, before, result).await;
    // the next command chains after the row
    let committed = bus
        .execute::<Environment, _>(&admin("acme"), &[&id("prod")], record_sync(), false, &())
        .await
        .unwrap();
    assert_eq!(committed.sequence, 2);
    assert!(t.store.verify().await.unwrap().ok);
}

/// SQLite has no transaction ids: the append checks the event it follows by its
/// position and bytes (decision 76). A rewrite with the same bytes changes nothing
/// the chain or a reader sees, and is chained after without a read; the same event
/// moved to another position is a conflict that stores nothing, and the bus decides
/// again on a read. An event too large to keep makes the next command read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_predecessor_is_checked_by_its_position_and_bytes_sqlite() {
    let (t, bus, loaded) = registered_and_kept(Kind::Sqlite).await;
    exec(
        &t.store,
        "UPDATE events SET payload = payload || '', metadata = metadata || '' \
         WHERE aggregate_id = 'acme:prod' AND sequence = 1",
    )
    .await;
    let envelope = admin_envelope();
    let committed = t
        .store
        .commit(loaded, deactivated(), &envelope)
        .await
        .unwrap();
    assert_eq!(committed.sequence, 2);

    // moved: deleted and inserted again, byte for byte, at the next position
    let loaded = kept(&t).await;
    exec(
        &t.store,
        "CREATE TEMP TABLE moved AS SELECT *, (SELECT MAX(position) + 1 FROM events) AS moved_to \
           FROM events WHERE aggregate_id = 'acme:prod' AND sequence = 2; \
         DELETE FROM events WHERE aggregate_id = 'acme:prod' AND sequence = 2; \
         INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
           event_version, payload, metadata, position) \
           SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, moved_to FROM moved; \
         DROP TABLE moved",
    )
    .await;
    let before = t.store.event_count().await.unwrap();
    let reactivated = vec![aggregates::environment::EnvironmentEvent::Reactivated {
        from: aggregates::environment::EnvironmentStatus::Deactivated,
    }];
    let result = t.store.commit(loaded, reactivated, &envelope).await;
    a_conflict_that_stored_nothing(&t, before, result).await;
    // the bus reads and chains after it
    let committed = bus
        .execute::<Environment, _>(
            &admin("acme"),
            &[&id("prod")],
            EnvironmentCommand::Reactivate,
            false,
            &(),
        )
        .await
        .unwrap();
    assert_eq!(committed.sequence, 3);
    assert!(t.store.verify().await.unwrap().ok);

    // an event too large to keep (a 20 kB reason in its metadata): the next reads
    let loaded = kept(&t).await;
    let long = eventstore::Envelope {
        reason: Some("r".repeat(20_000)),
        ..envelope
    };
    let committed = t.store.commit(loaded, deactivated(), &long).await.unwrap();
    assert_eq!(committed.sequence, 4);
    assert!(!kept_or_read(&t).await.is_unread());
}

async fn the_digest_command_round_trips_into_verify(kind: Kind) {
    let t = TestStore::new(kind).await;
    let events = build_log(&t).await;
    // the binary seals what its readers see: wait for the whole log to be visible
    seal_all(&t.store, EVENTS as i64).await;
    let (code, stdout, stderr) = cli(&t, &["digest"]);
    assert_eq!(code, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    let text = printed["digest"].as_str().unwrap();
    let digest: ExternalDigest = text.parse().unwrap();
    assert_eq!(printed["position"], events[PROD_2].position);
    assert_eq!(digest.position, events[PROD_2].position);
    assert_eq!(printed["events"], EVENTS as i64);
    assert_eq!(printed["log_id"], digest.log_id.to_string());
    assert_eq!(
        Some(digest.log_id),
        t.store.log_id().await.unwrap(),
        "the log id of this database"
    );
    assert!(printed["sealed_at"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(stderr.contains(text), "{stderr}");
    assert!(stderr.contains("outside"), "{stderr}");
    // idempotent: no new events, the same seal
    let seals = t.store.seals(LogCursor::START, 100).await.unwrap();
    let (_, again, _) = cli(&t, &["digest"]);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again, printed);
    assert_eq!(t.store.seals(LogCursor::START, 100).await.unwrap(), seals);

    let (code, stdout, stderr) = cli(&t, &["verify", "--digest", text]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["digest"]["external"]["ok"], true);
    assert!(
        stderr.contains("is the one the digest given was taken from"),
        "{stderr}"
    );
}

async fn the_sealer_keeps_the_head_and_seals_in_serve(kind: Kind) {
    let t = TestStore::new(kind).await;
    let auth = workflowops::http::auth::Auth::new(&[7u8; 32]);
    let mut app =
        workflowops::Application::with_store(t.store.clone(), "127.0.0.1:0".parse().unwrap(), auth)
            .await
            .unwrap();
    app.set_seal_interval(Some(Duration::from_millis(400)));
    let domain = app.domain().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let head_events = || async {
        let head = t.store.digest_head().await.unwrap().unwrap();
        (head.events, head.digest, head.updated_at)
    };
    assert_eq!(head_events().await.0, 0);
    let alice = admin("acme");
    let mut last = 0;
    for (n, name) in ["prod", "stage", "dev"].into_iter().enumerate() {
        last = domain
            .environment(&alice, &id(name), register(name))
            .await
            .unwrap()
            .position
            .unwrap();
        // the head follows each append, with no seal asked for
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (events, digest, updated_at) = head_events().await;
            if events == n as i64 + 1 {
                assert!(digest.is_some() && updated_at.is_some());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the head did not advance: {events}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // the periodic seal catches up with the head
    let deadline = Instant::now() + Duration::from_secs(20);
    let seals = loop {
        let seals = t.store.seals(LogCursor::START, 100).await.unwrap();
        if seals.last().is_some_and(|s| s.cursor.position == last) {
            break seals;
        }
        assert!(Instant::now() < deadline, "no periodic seal: {seals:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(seals.iter().all(|s| s.kind == "periodic"), "{seals:?}");
    assert_eq!(seals.last().unwrap().events, 3);
    // nothing new: no new seal
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(t.store.seals(LogCursor::START, 100).await.unwrap(), seals);
    let report = t.store.verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.digest.unwrap().seals_checked >= 1);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the service stops with its sealer")
        .unwrap()
        .unwrap();
}

async fn log_digest_through_graphql_seals_and_verifies(kind: Kind) {
    let api = crate::api::Api::start(kind).await;
    let admin_token = api.token("acme", "admin", "alice@acme");
    let position = crate::api::register_environment(&api, &admin_token, "prod", "PRODUCTION").await;
    crate::api::register_environment(&api, &admin_token, "stage", "STAGING").await;
    let total = api.event_count().await;
    assert!(total >= 2);
    let viewer = api.token("globex", "viewer", "viewer@globex");
    let query = "{ logDigest { position digest sealedAt events } }";
    let deadline = Instant::now() + Duration::from_secs(20);
    let data = loop {
        let data = api.ok(&viewer, query, json!({})).await;
        if data["logDigest"]["events"] == total || Instant::now() > deadline {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let answer = &data["logDigest"];
    assert_eq!(answer["events"], total, "{data}");
    let last = api.store.store.last_position().await.unwrap();
    assert!(answer["position"].as_i64().unwrap() > position);
    assert_eq!(answer["position"], last);
    assert!(answer["sealedAt"].as_str().is_some());
    let digest: ExternalDigest = answer["digest"].as_str().unwrap().parse().unwrap();
    assert_eq!(digest.position, last);
    let seals = api.store.store.seals(LogCursor::START, 100).await.unwrap();
    assert!(
        seals.iter().any(|s| s.cursor.position == last),
        "sealed on demand: {seals:?}"
    );
    let report = api.store.store.verify_with_digest(&digest).await.unwrap();
    assert!(report.ok, "{report:?}");
    api.stop().await;
}
