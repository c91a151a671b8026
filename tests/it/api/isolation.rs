//! Tenant isolation over HTTP (DOMAIN.md §7: "a user never sees or changes another
//! tenant's data").
//!
//! Tenant A ("acme") gets real data of every kind: environments (one deactivated),
//! a canonical workflow, mappings (untracked, linked, ignored), incidents (one
//! detected, one acknowledged with a pending approval), promotions (pending approval,
//! approved, deployed) and a scheduled deployment. Then an admin of tenant B
//! ("globex") walks every query, mutation and subscription of the served schema with
//! A's ids: reads find nothing, changes are `NOT_FOUND` (never `FORBIDDEN`, never
//! with A's data in the message) and append nothing, creating with an id A already
//! uses makes B's own object, and the event streams (WebSocket and SSE) carry B's
//! events only, live. Afterwards A reads exactly what it read before.
//!
//! A coverage guard compares the operations walked with the root fields of
//! `workflowops::graphql::sdl()`: an operation added later without an isolation case
//! fails this test by name.

use std::collections::BTreeSet;
use std::time::Duration;
use workflowops::workflows::incident_slot::report_drift;

use aggregates::canonical::CanonicalCommand;
use aggregates::content::ContentHash;
use aggregates::incident::{AffectedWorkflow, ApprovalRequirements, IncidentPolicy};
use aggregates::kernel::command::{Actor, Role};
use aggregates::kernel::ids::{LocalId, Slug, TenantId};
use aggregates::mapping::{MappingCommand, Observation};
use aggregates::promotion::{PromotionCommand, PromotionWorkflow};
use eventstore::{PgStore, SqliteStore, Store};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use workflowops::command::bus::CommandContext;

use super::{code, Api};
use crate::support::{both_backends, Kind};

const A: &str = "acme";
const B: &str = "globex";
const A_ADMIN: &str = "alice@acme";
const A_ONCALL: &str = "oncall@acme";
const B_ADMIN: &str = "bob@globex";
/// Every piece of A's data (names, URLs, repository, actors, reasons, tickets)
/// carries one of these, and none of A's ids does: no response B gets may contain
/// them, except inside a value B itself sent.
const A_MARKERS: &[&str] = &["acme", "confidential"];
/// A's environments: `legacy` is deactivated.
const A_ENVIRONMENTS: [&str; 3] = ["prod", "stage", "legacy"];
const CANONICAL: &str = "wf-billing";
const UNTRACKED: &str = "n8n-untracked";
const LINKED: &str = "n8n-linked";
const IGNORED: &str = "n8n-ignored";
const PIPELINE: &str = "pipe-1";
const PROMO_PENDING: &str = "promo-pending";
const PROMO_APPROVED: &str = "promo-approved";
const PROMO_DEPLOYED: &str = "promo-deployed";
/// How long a stream may take to deliver what it owes.
const STREAM_WAIT: Duration = Duration::from_secs(15);

pub(super) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn local(s: &str) -> LocalId {
    LocalId::parse(s).unwrap()
}

fn context(tenant: &str, actor: Actor) -> CommandContext {
    CommandContext::new(TenantId::parse(tenant).unwrap(), actor)
}

fn content_hash(n: u32) -> ContentHash {
    ContentHash::parse(&format!("{n:064x}")).unwrap()
}

/// The number of stored events and the highest position, read from the table.
/// (`Api::event_count` reads the log's reader-safe head, which on PostgreSQL stays
/// behind while any transaction — the projector's, say — is still open.)
pub(super) async fn stored_events(api: &Api) -> (i64, i64) {
    const SQL: &str = "SELECT COUNT(*), COALESCE(MAX(position), 0) FROM events";
    match &api.store.store {
        Store::Postgres(PgStore { pool, .. }) => sqlx::query_as(SQL).fetch_one(pool).await,
        Store::Sqlite(SqliteStore { pool, .. }) => sqlx::query_as(SQL).fetch_one(pool).await,
    }
    .expect("count the stored events")
}

/// How many events are stored.
pub(super) async fn event_total(api: &Api) -> i64 {
    stored_events(api).await.0
}

/// The position of the last stored event (for `minPosition`).
pub(super) async fn last_position(api: &Api) -> i64 {
    stored_events(api).await.1
}

/// What tenant A owns, by id.
struct Seed {
    incident_detected: String,
    incident_pending: String,
    approval_id: i64,
    deployment: String,
    /// Every aggregate of A that has events: (aggregate type, local id).
    aggregates: BTreeSet<(String, String)>,
    /// The global positions of A's events.
    positions: BTreeSet<i64>,
    /// An `after` cursor of each of A's paged lists.
    cursors: Value,
}

const REGISTER: &str =
    "mutation($id: ID, $name: String!, $class: EnvironmentClass!, $url: String!, $git: GitInput) {
  registerEnvironment(id: $id, name: $name, class: $class, n8nBaseUrl: $url, git: $git) {
    position environment { id name class status } } }";

async fn seed_tenant_a(api: &Api) -> Seed {
    let admin = api.token(A, "admin", A_ADMIN);
    let oncall = api.token(A, "developer", A_ONCALL);
    for (id, name, class) in [
        ("prod", "Acme Confidential Production", "PRODUCTION"),
        ("stage", "Acme Confidential Staging", "STAGING"),
        ("legacy", "Acme Confidential Legacy", "DEV"),
    ] {
        let git = json!({ "provider": "GITHUB", "repository": "acme-corp/confidential-flows",
                          "branch": "main", "folder": "workflows" });
        let data = api
            .ok(
                &admin,
                REGISTER,
                json!({ "id": id, "name": name, "class": class,
                        "url": format!("https://{id}.n8n.acme.example"), "git": git }),
            )
            .await;
        assert_eq!(
            data["registerEnvironment"]["environment"]["name"], name,
            "{data}"
        );
    }
    api.ok(
        &admin,
        "mutation { deactivateEnvironment(id: \"legacy\", reason: \"acme: sunset\") { position } }",
        json!({}),
    )
    .await;

    // Sync-discovered objects, through the domain as the sync job would.
    let developer = context(A, Actor::new(A_ONCALL, Role::Developer));
    api.domain
        .canonical(
            &developer,
            &local(CANONICAL),
            CanonicalCommand::Create {
                canonical_id: local(CANONICAL),
                name: "Acme Confidential Billing".into(),
                slug: Some(Slug::parse("billing").unwrap()),
                git_path: Some("workflows/acme-billing.json".into()),
            },
        )
        .await
        .expect("A's canonical workflow");
    for (n, (n8n_id, name, auto_link)) in [
        (UNTRACKED, "Acme Confidential Payroll", None),
        (LINKED, "Acme Confidential Billing (prod)", Some(CANONICAL)),
        (IGNORED, "Acme Confidential Scratch", None),
    ]
    .into_iter()
    .enumerate()
    {
        api.domain
            .mapping(
                &developer,
                &local("prod"),
                &local(n8n_id),
                MappingCommand::Observe {
                    environment_id: local("prod"),
                    n8n_workflow_id: local(n8n_id),
                    observation: Observation {
                        name: name.into(),
                        content_hash: content_hash(n as u32 + 1),
                        n8n_updated_at: None,
                    },
                    auto_link: auto_link.map(local),
                },
            )
            .await
            .expect("A's mapping is discovered");
    }
    let data = api
        .ok(
            &oncall,
            "mutation($e: ID!, $w: ID!) { ignoreWorkflow(environmentId: $e, n8nWorkflowId: $w,
               reason: \"acme: scratch workflow\") { mapping { status canonicalId } } }",
            json!({ "e": "prod", "w": IGNORED }),
        )
        .await;
    assert_eq!(
        data["ignoreWorkflow"]["mapping"]["status"], "IGNORED",
        "{data}"
    );

    // Drift opens incidents: one stays detected; the production one is acknowledged
    // and its close waits for a second admin's approval.
    let drift = context(A, Actor::system("drift"));
    let affected = vec![AffectedWorkflow {
        workflow_id: CANONICAL.into(),
        name: "Acme Confidential Billing".into(),
    }];
    let (detected, _) = report_drift(
        &api.domain,
        &drift,
        &local("stage"),
        affected.clone(),
        None,
        IncidentPolicy::default(),
    )
    .await
    .expect("drift on A's staging");
    let policy = IncidentPolicy {
        approvals: ApprovalRequirements {
            close: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let (pending, _) = report_drift(&api.domain, &drift, &local("prod"), affected, None, policy)
        .await
        .expect("drift on A's production");
    let data = api
        .ok(
            &oncall,
            "mutation($id: ID!) { acknowledgeIncident(id: $id, reason: \"acme: on it\",
               ownerUserId: \"oncall@acme\", ticketRef: \"ACME-42\") { incident { status } } }",
            json!({ "id": pending.as_str() }),
        )
        .await;
    assert_eq!(
        data["acknowledgeIncident"]["incident"]["status"],
        "ACKNOWLEDGED"
    );
    let data = api
        .ok(
            &admin,
            "mutation($id: ID!) { closeIncident(id: $id, reason: \"acme: accepted\",
               resolutionType: ACKNOWLEDGE) { incident { status pendingApproval { approvalId } } } }",
            json!({ "id": pending.as_str() }),
        )
        .await;
    let incident = &data["closeIncident"]["incident"];
    assert_eq!(
        incident["status"], "ACKNOWLEDGED",
        "the close waits for approval: {data}"
    );
    let approval_id = incident["pendingApproval"]["approvalId"]
        .as_i64()
        .unwrap_or_else(|| panic!("a pending approval: {data}"));

    // A's configuration: a pipeline, and drift policies for the tenant and `prod`.
    let data = api
        .ok(
            &admin,
            "mutation { createPipeline(id: \"pipe-1\", name: \"Acme Confidential Path\",
               description: \"acme: staging to production\",
               stages: [{ sourceEnvironmentId: \"stage\", targetEnvironmentId: \"prod\",
                          gates: { requireApproval: true } }]) { pipeline { id name active } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["createPipeline"]["pipeline"]["active"], true, "{data}");
    for (environment, policy) in [
        (
            Value::Null,
            json!({ "closedIncidentRetentionDays": 77, "criticalTtlHours": 7 }),
        ),
        (
            json!("prod"),
            json!({ "criticalTtlHours": 3, "enforceSla": false }),
        ),
    ] {
        let data = api
            .ok(
                &admin,
                "mutation($e: ID, $policy: DriftPolicyInput!) { setDriftPolicy(environmentId: $e,
                   policy: $policy, reason: \"acme: stricter\") { position policy { source updatedBy } } }",
                json!({ "e": environment, "policy": policy }),
            )
            .await;
        assert_eq!(
            data["setDriftPolicy"]["policy"]["updatedBy"], A_ADMIN,
            "{data}"
        );
    }

    // A credential mapping from staging to production.
    let data = api
        .ok(
            &admin,
            "mutation { setCredentialMapping(sourceEnvironmentId: \"stage\", targetEnvironmentId: \"prod\",
               type: \"slackApi\", sourceName: \"Acme Confidential Slack\", targetId: \"acme-cred-41\",
               targetName: \"Acme Confidential Slack Prod\") { mapping { updatedBy } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["setCredentialMapping"]["mapping"]["updatedBy"], A_ADMIN,
        "{data}"
    );

    // A webhook endpoint, for an event type nothing here produces (no delivery is
    // ever queued, so the sender appends nothing during the walk).
    let data = api
        .ok(
            &admin,
            "mutation { createWebhook(id: \"hook-1\", url: \"https://hooks.acme.example/wfo\",
               eventTypes: [\"incident.payload_purged\"], description: \"Acme Confidential tickets\") {
               secret webhook { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["createWebhook"]["webhook"]["id"], "hook-1", "{data}");
    // A notification channel, for a kind nothing here produces (an SLA expiry).
    let data = api
        .ok(
            &admin,
            "mutation { createNotificationRule(id: \"rule-1\",
               url: \"https://hooks.acme.example/services/acme-confidential\", format: SLACK,
               kinds: [INCIDENT_EXPIRED], environmentId: \"prod\", description: \"Acme Confidential ops\") {
               webhook { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["createNotificationRule"]["webhook"]["id"], "rule-1",
        "{data}"
    );

    // Promotions (created by the promotion service), one deployed for tomorrow.
    let promoter = context(A, Actor::new(A_ADMIN, Role::Admin));
    for (id, requires_approval) in [
        (PROMO_PENDING, true),
        (PROMO_APPROVED, false),
        (PROMO_DEPLOYED, false),
    ] {
        let create = PromotionCommand::Create {
            pipeline_id: local(PIPELINE),
            source_environment_id: local("stage"),
            target_environment_id: local("prod"),
            workflows: vec![PromotionWorkflow {
                canonical_id: CANONICAL.into(),
                name: "Acme Confidential Billing".into(),
                source_content_hash: Some(content_hash(2).to_string()),
            }],
            requires_approval,
            allow_self_approval: false,
            bypass_validation: false,
            source_snapshot: None,
        };
        api.domain
            .promotion(&promoter, &local(id), create)
            .await
            .expect("A's promotion");
        api.domain
            .promotion(
                &promoter,
                &local(id),
                PromotionCommand::RecordGateResults { results: vec![] },
            )
            .await
            .expect("A's promotion passes its gates");
    }
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let data = api
        .ok(
            &admin,
            "mutation($p: ID!, $at: DateTime) { deployPromotion(promotionId: $p, scheduledFor: $at) {
               deployment { id status } } }",
            json!({ "p": PROMO_DEPLOYED, "at": tomorrow }),
        )
        .await;
    assert_eq!(
        data["deployPromotion"]["deployment"]["status"], "SCHEDULED",
        "{data}"
    );
    let deployment = data["deployPromotion"]["deployment"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // What A has, read back by A: every aggregate and position, and a cursor into
    // each paged list.
    let head = last_position(api).await;
    let mut aggregates = BTreeSet::new();
    let mut positions = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let data = api
            .ok(
                &admin,
                "query($p: Int, $after: String) { auditTrail(first: 100, after: $after, minPosition: $p) {
                   nodes { position aggregateType aggregateId } pageInfo { hasNextPage endCursor } } }",
                json!({ "p": head, "after": after }),
            )
            .await;
        let trail = &data["auditTrail"];
        for node in trail["nodes"].as_array().unwrap() {
            positions.insert(node["position"].as_i64().unwrap());
            aggregates.insert((
                node["aggregateType"].as_str().unwrap().to_string(),
                node["aggregateId"].as_str().unwrap().to_string(),
            ));
        }
        if trail["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = trail["pageInfo"]["endCursor"].as_str().map(str::to_string);
    }
    assert_eq!(
        positions.len() as i64,
        event_total(api).await,
        "A's audit trail holds every event so far (only A has written)"
    );
    for expected in [
        "environment",
        "canonical_workflow",
        "workflow_mapping",
        "incident",
        "promotion",
        "deployment",
    ] {
        assert!(
            aggregates.iter().any(|(t, _)| t == expected),
            "A's seed has a {expected}: {aggregates:?}"
        );
    }
    let cursors = api
        .ok(
            &admin,
            "query($p: Int) { workflowMatrix(first: 1, minPosition: $p) { pageInfo { endCursor } }
               untrackedWorkflows(environmentId: \"prod\", first: 1, minPosition: $p) { pageInfo { endCursor } }
               incidents(first: 1, minPosition: $p) { pageInfo { endCursor } }
               promotions(first: 1, minPosition: $p) { pageInfo { endCursor } }
               deployments(first: 1, minPosition: $p) { pageInfo { endCursor } }
               auditTrail(first: 1, minPosition: $p) { pageInfo { endCursor } }
               pipelines(first: 1, minPosition: $p) { pageInfo { endCursor } } }",
            json!({ "p": head }),
        )
        .await;
    for (list, page) in cursors.as_object().unwrap() {
        assert!(
            page["pageInfo"]["endCursor"].is_string(),
            "A's {list} has a cursor: {cursors}"
        );
    }
    Seed {
        incident_detected: detected.to_string(),
        incident_pending: pending.to_string(),
        approval_id,
        deployment,
        aggregates,
        positions,
        cursors,
    }
}

/// Everything A can read, to compare before and after B's walk.
async fn snapshot_of_a(api: &Api) -> Value {
    let token = api.token(A, "viewer", "auditor@acme");
    api.ok(
        &token,
        "query($p: Int) {
           environments(minPosition: $p) { id name class status gitConfigured onboarded driftStatus
             counts { inSync withDrift notInGit } linkedMappings activeIncident { id status }
             lastSyncAt registeredAt updatedAt }
           workflowMatrix(first: 100, minPosition: $p) { nodes { canonicalId slug name untracked
             cells { environmentId mappingStatus syncState n8nWorkflowId name envContentHash since } } }
           untrackedWorkflows(environmentId: \"prod\", minPosition: $p) { nodes { n8nWorkflowId name since } }
           incidents(first: 100, minPosition: $p) { nodes { id environmentId status severity ticketRef
             ownerUserId reason pendingApproval { approvalId requestedBy } updatedAt } }
           promotions(first: 100, minPosition: $p) { nodes { id status createdBy approvedBy deploymentId } }
           deployments(first: 100, minPosition: $p) { nodes { id promotionId status scheduledFor } }
           auditTrail(first: 100, minPosition: $p) { nodes { position aggregateType aggregateId eventType actor } }
           verifyEventLog { ok checkedEvents firstBrokenPosition }
           pipelines(first: 100, minPosition: $p) { nodes { id name description active createdBy
             stages { sourceEnvironmentId targetEnvironmentId gates { requireApproval } } updatedAt } }
           tenantPolicy: driftPolicy(minPosition: $p) { source scope closedIncidentRetentionDays
             severityTtls { criticalHours } enforceSla updatedBy updatedAt }
           prodPolicy: driftPolicy(environmentId: \"prod\", minPosition: $p) { source scope
             closedIncidentRetentionDays severityTtls { criticalHours } enforceSla updatedBy updatedAt }
         }",
        json!({ "p": last_position(api).await }),
    )
    .await
}

/// Decision 71: the matrix's rows and cells are written as JSON text while they
/// resolve, except where a key is repeated (directly, through an alias or through a
/// fragment), which async-graphql merges: such answers are the merged objects.
async fn matrix_keys_merge_as_async_graphql_merges_them(api: &Api, snapshot: &Value) {
    let token = api.token(A, "viewer", "auditor@acme");
    let merged = api
        .ok(
            &token,
            "query($p: Int) { workflowMatrix(first: 100, minPosition: $p) {
               nodes { name cells { environmentId } cells { mappingStatus } }
               edges { node { cells { n: name } ...C } } } }
             fragment C on MatrixRow { cells { n: name since } }",
            json!({ "p": last_position(api).await }),
        )
        .await;
    let expected = snapshot["workflowMatrix"]["nodes"].as_array().unwrap();
    assert!(!expected.is_empty());
    let nodes = merged["workflowMatrix"]["nodes"].as_array().unwrap();
    let edges = merged["workflowMatrix"]["edges"].as_array().unwrap();
    assert_eq!((nodes.len(), edges.len()), (expected.len(), expected.len()));
    for ((node, edge), want) in nodes.iter().zip(edges).zip(expected) {
        let want_cells = want["cells"].as_array().unwrap();
        assert!(!want_cells.is_empty());
        for (index, cell) in want_cells.iter().enumerate() {
            let (got, edge_cell) = (&node["cells"][index], &edge["node"]["cells"][index]);
            assert_eq!(got["environmentId"], cell["environmentId"], "{merged}");
            assert_eq!(got["mappingStatus"], cell["mappingStatus"], "{merged}");
            assert_eq!(edge_cell["n"], cell["name"], "{merged}");
            assert_eq!(edge_cell["since"], cell["since"], "{merged}");
        }
    }
}

/// The string values inside `value` (what a caller sent).
fn strings_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.to_lowercase()),
        Value::Array(items) => items.iter().for_each(|v| strings_in(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings_in(v, out)),
        _ => {}
    }
}

/// No part of `body` carries A's data, except the values B itself `sent`.
fn assert_no_leak(what: &str, body: &Value, sent: &Value) {
    let mut text = body.to_string().to_lowercase();
    let mut own = vec![];
    strings_in(sent, &mut own);
    for s in own.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), "");
    }
    for marker in A_MARKERS {
        assert!(
            !text.contains(marker),
            "{what}: tenant B's response carries tenant A's data ({marker:?}): {body}"
        );
    }
}

/// Tenant B's walk: what it exercised, and checks shared by every step.
struct Walk<'a> {
    api: &'a Api,
    token: String,
    exercised: BTreeSet<String>,
}

impl Walk<'_> {
    /// A read by B (one root field, possibly aliased): no error, nothing of A.
    async fn read(&mut self, field: &str, query: &str, variables: Value) -> Value {
        self.exercised.insert(format!("Query.{field}"));
        let body = self.api.gql(&self.token, query, variables.clone()).await;
        assert!(
            body.get("errors").is_none(),
            "Query.{field} as tenant B with A's ids must not fail: {body}"
        );
        assert_no_leak(&format!("Query.{field}"), &body, &variables);
        body["data"].clone()
    }

    /// A change by B aimed at an object of A: `NOT_FOUND` (not `FORBIDDEN`, not a
    /// state error that would reveal A's object), no data of A, nothing appended.
    async fn refused(&mut self, field: &str, query: &str, variables: Value) {
        self.exercised.insert(format!("Mutation.{field}"));
        let before = event_total(self.api).await;
        let body = self.api.gql(&self.token, query, variables.clone()).await;
        assert_no_leak(&format!("Mutation.{field}"), &body, &variables);
        let errors = body["errors"].as_array().map_or(0, Vec::len);
        assert_eq!(
            errors, 1,
            "Mutation.{field} on A's object as B must fail once: {body}"
        );
        let error = &body["errors"][0];
        assert_eq!(
            code(error),
            "NOT_FOUND",
            "Mutation.{field} on A's object as B must be NOT_FOUND: {body}"
        );
        assert!(
            body["data"].is_null() || body["data"][field].is_null(),
            "Mutation.{field} refused yet returned a payload: {body}"
        );
        if let Some(id) = error["extensions"].get("id") {
            let mut sent = vec![String::new()];
            strings_in(&variables, &mut sent);
            // the id of the aggregate B addressed: what B sent, joined by `:`
            let id = id.as_str().unwrap_or("?").to_lowercase();
            assert!(
                sent.contains(&id) || id.split(':').all(|part| sent.iter().any(|s| s == part)),
                "Mutation.{field}: the error names an id B did not send: {body}"
            );
        }
        assert_eq!(
            event_total(self.api).await,
            before,
            "Mutation.{field} was refused but appended events"
        );
    }
}

impl Walk<'_> {
    /// A change by B of its own (a creation with an id A uses, or B's tenant-wide
    /// scope): it succeeds, with nothing of A in it. Returns the payload.
    async fn own(&mut self, field: &str, query: &str, variables: Value) -> Value {
        self.exercised.insert(format!("Mutation.{field}"));
        let body = self.api.gql(&self.token, query, variables.clone()).await;
        assert!(
            body.get("errors").is_none(),
            "Mutation.{field} on B's own scope must succeed: {body}"
        );
        assert_no_leak(&format!("Mutation.{field}"), &body, &variables);
        body["data"][field].clone()
    }
}

fn nodes(data: &Value, field: &str) -> Vec<Value> {
    data[field]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{field} has nodes: {data}"))
        .clone()
}

/// B, which owns nothing yet, reads with A's ids and finds nothing.
async fn b_reads_nothing_of_a(walk: &mut Walk<'_>, seed: &Seed) {
    for (source, target) in [(Value::Null, Value::Null), (json!("stage"), json!("prod"))] {
        let data = walk
            .read(
                "credentialMappings",
                "query($s: ID, $t: ID) { credentialMappings(sourceEnvironmentId: $s, targetEnvironmentId: $t) {
                   sourceEnvironmentId targetEnvironmentId type sourceName targetId targetName updatedBy } }",
                json!({ "s": source, "t": target }),
            )
            .await;
        assert_eq!(
            data["credentialMappings"],
            json!([]),
            "B reads A's mappings: {data}"
        );
    }
    let data = walk
        .read("environments", "{ environments { id name } }", json!({}))
        .await;
    assert_eq!(
        data["environments"],
        json!([]),
        "B sees no environment of A"
    );
    for id in A_ENVIRONMENTS {
        let data = walk
            .read(
                "snapshots",
                "query($e: ID!) { snapshots(environmentId: $e) { nodes { id digest } } }",
                json!({ "e": id }),
            )
            .await;
        assert_eq!(nodes(&data, "snapshots"), Vec::<Value>::new(), "{data}");
    }
    let data = walk
        .read("webhooks", "{ webhooks { id url description } }", json!({}))
        .await;
    assert_eq!(data["webhooks"], json!([]), "B sees no webhook of A");
    let data = walk
        .read(
            "webhookDeliveries",
            "query($id: ID!) { webhookDeliveries(webhookId: $id) { nodes { id messageId } } }",
            json!({ "id": "hook-1" }),
        )
        .await;
    assert_eq!(
        nodes(&data, "webhookDeliveries"),
        Vec::<Value>::new(),
        "{data}"
    );
    let data = walk
        .read(
            "snapshot",
            "query($id: ID!) { snapshot(id: $id) { id digest workflows { name } } }",
            json!({ "id": format!("{}.pre", seed.deployment) }),
        )
        .await;
    assert_eq!(data["snapshot"], Value::Null, "{data}");
    for id in A_ENVIRONMENTS {
        let data = walk
            .read(
                "environment",
                "query($id: ID!) { environment(id: $id) { id name activeIncident { id } } }",
                json!({ "id": id }),
            )
            .await;
        assert!(
            data["environment"].is_null(),
            "B reads A's environment {id}: {data}"
        );
    }

    const MATRIX: &str = "query($ids: [ID!], $search: String, $drift: Boolean!, $after: String) {
      workflowMatrix(first: 200, environmentIds: $ids, search: $search, onlyDrift: $drift, after: $after) {
        nodes { canonicalId name cells { environmentId mappingStatus n8nWorkflowId name } } } }";
    for variables in [
        json!({ "drift": false }),
        json!({ "ids": A_ENVIRONMENTS, "drift": false }),
        json!({ "ids": ["prod"], "search": "Billing", "drift": true }),
        json!({ "after": seed.cursors["workflowMatrix"]["pageInfo"]["endCursor"], "drift": false }),
    ] {
        let data = walk.read("workflowMatrix", MATRIX, variables.clone()).await;
        assert_eq!(
            nodes(&data, "workflowMatrix"),
            Vec::<Value>::new(),
            "B's matrix with {variables}: {data}"
        );
    }
    for after in [
        Value::Null,
        seed.cursors["untrackedWorkflows"]["pageInfo"]["endCursor"].clone(),
    ] {
        let data = walk
            .read(
                "untrackedWorkflows",
                "query($after: String) { untrackedWorkflows(environmentId: \"prod\", first: 200, after: $after) {
                   nodes { environmentId n8nWorkflowId name } } }",
                json!({ "after": after }),
            )
            .await;
        assert_eq!(
            nodes(&data, "untrackedWorkflows"),
            Vec::<Value>::new(),
            "{data}"
        );
    }

    const INCIDENTS: &str = "query($env: ID, $status: IncidentStatus, $after: String) {
      incidents(environmentId: $env, status: $status, first: 200, after: $after) {
        nodes { id environmentId status affectedWorkflows { name } } } }";
    for variables in [
        json!({}),
        json!({ "env": "prod" }),
        json!({ "env": "stage", "status": "DETECTED" }),
        json!({ "after": seed.cursors["incidents"]["pageInfo"]["endCursor"] }),
    ] {
        let data = walk.read("incidents", INCIDENTS, variables.clone()).await;
        assert_eq!(
            nodes(&data, "incidents"),
            Vec::<Value>::new(),
            "B's incidents with {variables}: {data}"
        );
    }
    for id in [&seed.incident_detected, &seed.incident_pending] {
        let data = walk
            .read(
                "incident",
                "query($id: ID!) { incident(id: $id) { id status reason ticketRef } }",
                json!({ "id": id }),
            )
            .await;
        assert!(data["incident"].is_null(), "B reads A's incident: {data}");
    }

    const PROMOTIONS: &str = "query($status: PromotionStatus, $target: ID, $after: String) {
      promotions(status: $status, targetEnvironmentId: $target, first: 200, after: $after) {
        nodes { id status createdBy workflows { name } } } }";
    for variables in [
        json!({}),
        json!({ "status": "PENDING_APPROVAL", "target": "prod" }),
        json!({ "after": seed.cursors["promotions"]["pageInfo"]["endCursor"] }),
    ] {
        let data = walk.read("promotions", PROMOTIONS, variables.clone()).await;
        assert_eq!(
            nodes(&data, "promotions"),
            Vec::<Value>::new(),
            "B's promotions with {variables}: {data}"
        );
    }
    for id in [PROMO_PENDING, PROMO_APPROVED, PROMO_DEPLOYED] {
        let data = walk
            .read(
                "promotion",
                "query($id: ID!) { promotion(id: $id) { id status createdBy } }",
                json!({ "id": id }),
            )
            .await;
        assert!(
            data["promotion"].is_null(),
            "B reads A's promotion {id}: {data}"
        );
    }

    const DEPLOYMENTS: &str = "query($promotion: ID, $status: DeploymentStatus, $after: String) {
      deployments(promotionId: $promotion, status: $status, first: 200, after: $after) {
        nodes { id promotionId status workflows { name } } } }";
    for variables in [
        json!({}),
        json!({ "promotion": PROMO_DEPLOYED, "status": "SCHEDULED" }),
        json!({ "after": seed.cursors["deployments"]["pageInfo"]["endCursor"] }),
    ] {
        let data = walk
            .read("deployments", DEPLOYMENTS, variables.clone())
            .await;
        assert_eq!(
            nodes(&data, "deployments"),
            Vec::<Value>::new(),
            "B's deployments with {variables}: {data}"
        );
    }
    let data = walk
        .read(
            "deployment",
            "query($id: ID!) { deployment(id: $id) { id status promotion { id } } }",
            json!({ "id": seed.deployment }),
        )
        .await;
    assert!(
        data["deployment"].is_null(),
        "B reads A's deployment: {data}"
    );

    const AUDIT: &str = "query($type: String, $id: ID, $actor: String, $after: String) {
      auditTrail(aggregateType: $type, aggregateId: $id, actor: $actor, first: 200, after: $after) {
        nodes { position aggregateId actor reason } } }";
    for variables in [
        json!({}),
        json!({ "type": "incident", "id": seed.incident_pending }),
        json!({ "type": "environment", "id": "prod" }),
        json!({ "actor": A_ADMIN }),
        json!({ "after": seed.cursors["auditTrail"]["pageInfo"]["endCursor"] }),
    ] {
        let data = walk.read("auditTrail", AUDIT, variables.clone()).await;
        assert_eq!(
            nodes(&data, "auditTrail"),
            Vec::<Value>::new(),
            "B's audit trail with {variables}: {data}"
        );
    }

    for after in [
        Value::Null,
        seed.cursors["pipelines"]["pageInfo"]["endCursor"].clone(),
    ] {
        let data = walk
            .read(
                "pipelines",
                "query($after: String) { pipelines(first: 200, after: $after) { nodes { id name stages { sourceEnvironmentId } } } }",
                json!({ "after": after }),
            )
            .await;
        assert_eq!(
            nodes(&data, "pipelines"),
            Vec::<Value>::new(),
            "B's pipelines: {data}"
        );
    }
    let data = walk
        .read(
            "pipeline",
            "query($id: ID!) { pipeline(id: $id) { id name description createdBy } }",
            json!({ "id": PIPELINE }),
        )
        .await;
    assert!(data["pipeline"].is_null(), "B reads A's pipeline: {data}");
    for environment in [Value::Null, json!("prod"), json!("stage")] {
        let data = walk
            .read(
                "driftPolicy",
                "query($e: ID) { driftPolicy(environmentId: $e) { source scope closedIncidentRetentionDays
                   severityTtls { criticalHours } updatedBy updatedAt } }",
                json!({ "e": environment }),
            )
            .await;
        let policy = &data["driftPolicy"];
        assert_eq!(
            policy["source"], "DEFAULT",
            "B, with no policy, gets the defaults, not A's: {data}"
        );
        assert!(
            policy["scope"].is_null()
                && policy["updatedBy"].is_null()
                && policy["updatedAt"].is_null(),
            "B's default policy names no scope or author: {data}"
        );
        assert_ne!(
            policy["closedIncidentRetentionDays"], 77,
            "A's tenant policy: {data}"
        );
        assert_ne!(
            policy["severityTtls"]["criticalHours"], 3,
            "A's `prod` policy: {data}"
        );
    }

    // Every aggregate A has, straight from the log (five aggregates per request:
    // at most ten history replays are allowed in one).
    let head = last_position(walk.api).await;
    let aggregates: Vec<_> = seed.aggregates.iter().collect();
    for chunk in aggregates.chunks(5) {
        let mut history = String::from("query {");
        let mut state = String::from("query {");
        for (n, (aggregate_type, id)) in chunk.iter().enumerate() {
            let args = format!("aggregateType: {aggregate_type:?}, aggregateId: {id:?}");
            history.push_str(&format!(
                " h{n}: eventHistory({args}) {{ position payload metadata }}"
            ));
            state.push_str(&format!(
                " a{n}: aggregateAt({args}) {{ state position }} p{n}: aggregateAt({args}, position: {head}) {{ state }}"
            ));
        }
        history.push('}');
        state.push('}');
        let data = walk.read("eventHistory", &history, json!({})).await;
        for (alias, events) in data.as_object().unwrap() {
            assert_eq!(events, &json!([]), "B reads A's events ({alias}): {data}");
        }
        let data = walk.read("aggregateAt", &state, json!({})).await;
        for (alias, replayed) in data.as_object().unwrap() {
            assert!(
                replayed.is_null(),
                "B replays A's aggregate ({alias}): {data}"
            );
        }
    }

    let data = walk
        .read(
            "verifyEventLog",
            "{ verifyEventLog { ok checkedEvents firstBrokenPosition broken { aggregateId } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["verifyEventLog"],
        json!({ "ok": true, "checkedEvents": 0, "firstBrokenPosition": null, "broken": [] }),
        "B, which has no events, verifies none of A's"
    );

    // The log digest covers every tenant's events, but all B learns is a hash and a
    // global position (positions are global in every event B sees anyway).
    let data = walk
        .read(
            "logDigest",
            "{ logDigest { position digest sealedAt events } }",
            json!({}),
        )
        .await;
    let answer = data["logDigest"].as_object().unwrap();
    let keys: BTreeSet<&str> = answer.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["digest", "events", "position", "sealedAt"]),
        "{data}"
    );
    let digest = answer["digest"].as_str().unwrap();
    let (hex_part, position) = digest.split_once('@').unwrap();
    assert!(
        hex_part.len() == 96 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()),
        "a hash only: {data}"
    );
    assert_eq!(position, answer["position"].to_string(), "{data}");
    let position = answer["position"].as_i64().unwrap();
    assert!(
        position > 0 && position <= last_position(walk.api).await,
        "{data}"
    );
}

/// B tries every change on A's objects; creating with an id of A makes B's own.
async fn b_changes_nothing_of_a(walk: &mut Walk<'_>, seed: &Seed) {
    for id in A_ENVIRONMENTS {
        walk.refused(
            "updateEnvironment",
            "mutation($id: ID!) { updateEnvironment(id: $id, name: \"Globex Hijack\",
               n8nBaseUrl: \"https://n8n.globex.example\") { position environment { id name } } }",
            json!({ "id": id }),
        )
        .await;
        walk.refused(
            "updateEnvironment",
            "mutation($id: ID!) { updateEnvironment(id: $id, removeGit: true) { position environment { id } } }",
            json!({ "id": id }),
        )
        .await;
        walk.refused(
            "deactivateEnvironment",
            "mutation($id: ID!) { deactivateEnvironment(id: $id, reason: \"globex: hijack\") {
               position environment { id status } } }",
            json!({ "id": id }),
        )
        .await;
        walk.refused(
            "unpinEnvironment",
            "mutation($id: ID!) { unpinEnvironment(id: $id, reason: \"globex\") { position environment { id pinned } } }",
            json!({ "id": id }),
        )
        .await;
        walk.refused(
            "reactivateEnvironment",
            "mutation($id: ID!) { reactivateEnvironment(id: $id) { position environment { id status } } }",
            json!({ "id": id }),
        )
        .await;
        // syncing reads n8n and Git with A's credentials: B must not get that far
        walk.refused(
            "syncEnvironment",
            "mutation($id: ID!) { syncEnvironment(environmentId: $id) { position events environment { id } } }",
            json!({ "id": id }),
        )
        .await;
        walk.refused(
            "checkDrift",
            "mutation($id: ID!) { checkDrift(environmentId: $id) { position withDrift incident { id } environment { id } } }",
            json!({ "id": id }),
        )
        .await;
        walk.refused(
            "syncRepository",
            "mutation($id: ID!) { syncRepository(environmentId: $id) { position events commitSha environment { id } } }",
            json!({ "id": id }),
        )
        .await;
    }

    const MAPPING: &str =
        "{ position mapping { environmentId n8nWorkflowId canonicalId name status } }";
    for workflow in [UNTRACKED, LINKED, IGNORED] {
        let vars = json!({ "e": "prod", "w": workflow, "c": CANONICAL });
        walk.refused(
            "linkWorkflow",
            &format!("mutation($e: ID!, $w: ID!, $c: ID!) {{ linkWorkflow(environmentId: $e, n8nWorkflowId: $w, canonicalId: $c) {MAPPING} }}"),
            vars.clone(),
        )
        .await;
        for (field, args) in [
            ("unlinkWorkflow", ", reason: \"globex: hijack\""),
            ("ignoreWorkflow", ", reason: \"globex: hijack\""),
            ("unignoreWorkflow", ""),
            ("deleteWorkflowMapping", ", reason: \"globex: hijack\""),
        ] {
            walk.refused(
                field,
                &format!("mutation($e: ID!, $w: ID!) {{ {field}(environmentId: $e, n8nWorkflowId: $w{args}) {MAPPING} }}"),
                json!({ "e": "prod", "w": workflow }),
            )
            .await;
        }
        walk.refused(
            "onboardWorkflow",
            "mutation($e: ID!, $w: ID!) { onboardWorkflow(environmentId: $e, n8nWorkflowId: $w) {
               position canonicalId slug gitPath commitSha mapping { status } } }",
            json!({ "e": "prod", "w": workflow }),
        )
        .await;
    }

    const INCIDENT: &str =
        "{ position incident { id status reason ticketRef pendingApproval { approvalId } } }";
    let next_week = (chrono::Utc::now() + chrono::Duration::days(7)).to_rfc3339();
    for id in [&seed.incident_detected, &seed.incident_pending] {
        for admin_override in [false, true] {
            let vars = json!({ "id": id, "o": admin_override });
            for (field, args) in [
                (
                    "acknowledgeIncident",
                    "reason: \"globex\", ownerUserId: \"bob\", ticketRef: \"GLX-1\"",
                ),
                ("stabilizeIncident", "reason: \"globex\""),
                (
                    "reconcileIncident",
                    "resolutionType: REVERT, resolutionDetails: \"globex\"",
                ),
                (
                    "closeIncident",
                    "reason: \"globex\", resolutionType: ACKNOWLEDGE",
                ),
            ] {
                walk.refused(
                    field,
                    &format!("mutation($id: ID!, $o: Boolean) {{ {field}(id: $id, {args}, adminOverride: $o) {INCIDENT} }}"),
                    vars.clone(),
                )
                .await;
            }
            walk.refused(
                "extendIncidentTtl",
                &format!(
                    "mutation($id: ID!, $o: Boolean, $at: DateTime!) {{ extendIncidentTtl(id: $id,
                   newDeadline: $at, reason: \"globex\", adminOverride: $o) {INCIDENT} }}"
                ),
                json!({ "id": id, "o": admin_override, "at": next_week }),
            )
            .await;
            let vars = json!({ "id": id, "o": admin_override, "a": seed.approval_id });
            walk.refused(
                "approveIncidentAction",
                &format!(
                    "mutation($id: ID!, $o: Boolean, $a: Int!) {{ approveIncidentAction(id: $id,
                   approvalId: $a, adminOverride: $o) {INCIDENT} }}"
                ),
                vars.clone(),
            )
            .await;
            walk.refused(
                "rejectIncidentAction",
                &format!(
                    "mutation($id: ID!, $o: Boolean, $a: Int!) {{ rejectIncidentAction(id: $id,
                   approvalId: $a, reason: \"globex\", adminOverride: $o) {INCIDENT} }}"
                ),
                vars,
            )
            .await;
        }
    }

    const PROMOTION: &str = "{ position promotion { id status approvedBy } }";
    for id in [PROMO_PENDING, PROMO_APPROVED, PROMO_DEPLOYED] {
        let vars = json!({ "id": id });
        walk.refused(
            "approvePromotion",
            &format!("mutation($id: ID!) {{ approvePromotion(id: $id) {PROMOTION} }}"),
            vars.clone(),
        )
        .await;
        walk.refused(
            "rejectPromotion",
            &format!(
                "mutation($id: ID!) {{ rejectPromotion(id: $id, reason: \"globex\") {PROMOTION} }}"
            ),
            vars.clone(),
        )
        .await;
        walk.refused(
            "cancelPromotion",
            &format!(
                "mutation($id: ID!) {{ cancelPromotion(id: $id, reason: \"globex\") {PROMOTION} }}"
            ),
            vars.clone(),
        )
        .await;
        for scheduled in [Value::Null, json!(next_week)] {
            walk.refused(
                "deployPromotion",
                "mutation($id: ID!, $at: DateTime) { deployPromotion(promotionId: $id, scheduledFor: $at) {
                   position deployment { id status promotionId } } }",
                json!({ "id": id, "at": scheduled }),
            )
            .await;
        }
    }
    walk.refused(
        "cancelDeployment",
        "mutation($id: ID!) { cancelDeployment(id: $id, reason: \"globex\") { position deployment { id status } } }",
        json!({ "id": seed.deployment }),
    )
    .await;
    for environment in A_ENVIRONMENTS {
        walk.refused(
            "restoreSnapshot",
            "mutation($e: ID!, $s: ID!) { restoreSnapshot(environmentId: $e, snapshotId: $s) {
               position promotion { id status } deployment { id } } }",
            json!({ "e": environment, "s": format!("{}.pre", seed.deployment) }),
        )
        .await;
    }

    const PIPELINE_PAYLOAD: &str =
        "{ position pipeline { id name description active stages { sourceEnvironmentId } } }";
    let vars = json!({ "id": PIPELINE });
    walk.refused(
        "updatePipeline",
        &format!(
            "mutation($id: ID!) {{ updatePipeline(id: $id, name: \"Globex Hijack\",
           description: \"globex\") {PIPELINE_PAYLOAD} }}"
        ),
        vars.clone(),
    )
    .await;
    walk.refused(
        "updatePipeline",
        &format!("mutation($id: ID!) {{ updatePipeline(id: $id, stages: [{{ sourceEnvironmentId: \"prod\",
           targetEnvironmentId: \"stage\" }}]) {PIPELINE_PAYLOAD} }}"),
        vars.clone(),
    )
    .await;
    walk.refused(
        "deactivatePipeline",
        &format!("mutation($id: ID!) {{ deactivatePipeline(id: $id, reason: \"globex\") {PIPELINE_PAYLOAD} }}"),
        vars,
    )
    .await;

    const MAPPING_PAYLOAD: &str = "{ position mapping { targetId targetName updatedBy } }";
    let vars =
        json!({ "s": "stage", "t": "prod", "type": "slackApi", "name": "Acme Confidential Slack" });
    walk.refused(
        "setCredentialMapping",
        &format!(
            "mutation($s: ID!, $t: ID!, $type: String!, $name: String!) {{ setCredentialMapping(
               sourceEnvironmentId: $s, targetEnvironmentId: $t, type: $type, sourceName: $name,
               targetId: \"globex-1\", targetName: \"Globex\") {MAPPING_PAYLOAD} }}"
        ),
        vars.clone(),
    )
    .await;
    walk.refused(
        "deleteCredentialMapping",
        &format!(
            "mutation($s: ID!, $t: ID!, $type: String!, $name: String!) {{ deleteCredentialMapping(
               sourceEnvironmentId: $s, targetEnvironmentId: $t, type: $type, sourceName: $name) {MAPPING_PAYLOAD} }}"
        ),
        vars,
    )
    .await;

    const POLICY_PAYLOAD: &str =
        "{ position policy { source scope closedIncidentRetentionDays severityTtls { criticalHours } updatedBy } }";
    for id in A_ENVIRONMENTS {
        walk.refused(
            "setDriftPolicy",
            &format!("mutation($e: ID) {{ setDriftPolicy(environmentId: $e, policy: {{ criticalTtlHours: 1 }},
               reason: \"globex\") {POLICY_PAYLOAD} }}"),
            json!({ "e": id }),
        )
        .await;
        walk.refused(
            "clearDriftPolicy",
            &format!("mutation($e: ID) {{ clearDriftPolicy(environmentId: $e, reason: \"globex\") {POLICY_PAYLOAD} }}"),
            json!({ "e": id }),
        )
        .await;
    }

    walk.refused(
        "comparePromotion",
        "mutation($s: ID!, $t: ID!) { comparePromotion(sourceEnvironmentId: $s, targetEnvironmentId: $t) {
           position workflows { canonicalId name change sourceContentHash targetContentHash } } }",
        json!({ "s": "stage", "t": "prod" }),
    )
    .await;
    for (id, workflows) in [
        (Value::Null, Value::Null),
        (json!(PROMO_PENDING), json!([CANONICAL])),
    ] {
        walk.refused(
            "createPromotion",
            "mutation($id: ID, $p: ID!, $s: ID!, $t: ID!, $w: [ID!]) { createPromotion(id: $id,
               pipelineId: $p, sourceEnvironmentId: $s, targetEnvironmentId: $t, workflowIds: $w) {
               position promotion { id status workflows { name } } } }",
            json!({ "id": id, "p": PIPELINE, "s": "stage", "t": "prod", "w": workflows }),
        )
        .await;
    }

    // B's own tenant-wide policy: clearing it (there is none) clears nothing of A's.
    let cleared = walk
        .own(
            "clearDriftPolicy",
            &format!("mutation {{ clearDriftPolicy(reason: \"globex: reset\") {POLICY_PAYLOAD} }}"),
            json!({}),
        )
        .await;
    assert!(
        cleared["position"].is_null(),
        "B had no policy to clear: {cleared}"
    );
    assert_eq!(cleared["policy"]["source"], "DEFAULT", "{cleared}");

    // A's webhook: B can change none of it, nor redeliver A's deliveries.
    const HOOK: &str = "{ position secret webhook { id url } }";
    let vars = json!({ "id": "hook-1" });
    walk.refused(
        "updateWebhook",
        &format!("mutation($id: ID!) {{ updateWebhook(id: $id, url: \"https://hooks.globex.example/x\") {HOOK} }}"),
        vars.clone(),
    )
    .await;
    walk.refused(
        "updateNotificationRule",
        &format!("mutation($id: ID!) {{ updateNotificationRule(id: $id, format: JSON, kinds: []) {HOOK} }}"),
        json!({ "id": "rule-1" }),
    )
    .await;
    let own_rule = walk
        .own(
            "createNotificationRule",
            &format!(
                "mutation($id: ID) {{ createNotificationRule(id: $id,
               url: \"https://hooks.globex.example/services/x\", format: JSON,
               kinds: [INCIDENT_EXPIRED]) {HOOK} }}"
            ),
            json!({ "id": "rule-1" }),
        )
        .await;
    assert_eq!(
        own_rule["webhook"],
        json!({ "id": "rule-1", "url": "https://hooks.globex.example/…" }),
        "B's `rule-1` is B's own"
    );
    for (field, call) in [
        ("rotateWebhookSecret", "rotateWebhookSecret(id: $id)"),
        (
            "disableWebhook",
            "disableWebhook(id: $id, reason: \"globex\")",
        ),
        ("enableWebhook", "enableWebhook(id: $id)"),
        ("deleteWebhook", "deleteWebhook(id: $id)"),
    ] {
        walk.refused(
            field,
            &format!("mutation($id: ID!) {{ {call} {HOOK} }}"),
            vars.clone(),
        )
        .await;
    }
    walk.refused(
        "redeliver",
        "mutation($id: ID!) { redeliver(deliveryId: $id) { delivery { id messageId } } }",
        json!({ "id": "x:hook-1:1" }),
    )
    .await;
    let created = walk
        .own(
            "createWebhook",
            &format!("mutation($id: ID) {{ createWebhook(id: $id, url: \"https://hooks.globex.example/x\",
               eventTypes: [\"incident.payload_purged\"]) {HOOK} }}"),
            vars,
        )
        .await;
    assert_eq!(
        created["webhook"],
        json!({ "id": "hook-1", "url": "https://hooks.globex.example/x" }),
        "B's `hook-1` is B's own"
    );

    // Creating with an id A uses: B's own objects, A's untouched (checked by the
    // caller with A's snapshot).
    let variables = json!({ "id": "prod", "name": "Globex Production", "class": "PRODUCTION",
        "url": "https://n8n.globex.example",
        "git": { "provider": "GITHUB", "repository": "globex/flows", "branch": "main", "folder": "flows" } });
    let registered = walk.own("registerEnvironment", REGISTER, variables).await;
    assert_eq!(
        registered["environment"],
        json!({ "id": "prod", "name": "Globex Production", "class": "PRODUCTION", "status": "ACTIVE" }),
        "B's `prod` is B's own"
    );
    let created = walk
        .own(
            "createPipeline",
            &format!(
                "mutation($id: ID) {{ createPipeline(id: $id, name: \"Globex Path\",
               stages: [{{ sourceEnvironmentId: \"prod\", targetEnvironmentId: \"qa\",
                          gates: {{ requireApproval: false }} }}]) {PIPELINE_PAYLOAD} }}"
            ),
            json!({ "id": PIPELINE }),
        )
        .await;
    assert_eq!(
        created["pipeline"],
        json!({ "id": PIPELINE, "name": "Globex Path", "description": null, "active": true,
                "stages": [{ "sourceEnvironmentId": "prod" }] }),
        "B's `pipe-1` is B's own"
    );
    let set = walk
        .own(
            "setDriftPolicy",
            &format!(
                "mutation {{ setDriftPolicy(policy: {{ closedIncidentRetentionDays: 11 }},
               reason: \"globex: short retention\") {POLICY_PAYLOAD} }}"
            ),
            json!({}),
        )
        .await;
    assert_eq!(set["policy"]["source"], "TENANT", "{set}");
    assert_eq!(set["policy"]["closedIncidentRetentionDays"], 11, "{set}");
    assert_eq!(set["policy"]["updatedBy"], B_ADMIN, "{set}");
}

/// The root operations of the served schema: `Query.x`, `Mutation.y`, `Subscription.z`.
pub(super) fn schema_operations() -> BTreeSet<String> {
    operations_in(&workflowops::graphql::sdl())
}

/// The root operations of `sdl`, named by their root type's kind.
fn operations_in(sdl: &str) -> BTreeSet<String> {
    let mut roots = vec![
        ("Query", "Query".to_string()),
        ("Mutation", "Mutation".to_string()),
        ("Subscription", "Subscription".to_string()),
    ];
    if let Some(start) = sdl.find("\nschema {") {
        let block = &sdl[start + 9..];
        let block = &block[..block.find('}').expect("schema block ends")];
        for line in block.lines() {
            if let Some((kind, type_name)) = line.trim().split_once(':') {
                let kind = kind.trim();
                for root in roots.iter_mut() {
                    if root.0.eq_ignore_ascii_case(kind) {
                        root.1 = type_name.trim().to_string();
                    }
                }
            }
        }
    }
    let mut operations = BTreeSet::new();
    for (kind, type_name) in roots {
        let header = format!("type {type_name} {{");
        let Some(start) = sdl.find(&header) else {
            continue;
        };
        let mut in_doc = false;
        for line in sdl[start + header.len()..].lines() {
            let trimmed = line.trim();
            if trimmed == "}" && !in_doc {
                break;
            }
            if let Some(rest) = trimmed.strip_prefix("\"\"\"") {
                // a one-line description opens and closes on the same line
                if rest.is_empty() || !rest.ends_with("\"\"\"") {
                    in_doc = !in_doc;
                }
                continue;
            }
            if in_doc || trimmed.starts_with('"') {
                continue;
            }
            let name: String = trimmed
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let rest = &trimmed[name.len()..];
            if !name.is_empty() && (rest.starts_with('(') || rest.starts_with(':')) {
                operations.insert(format!("{kind}.{name}"));
            }
        }
    }
    operations
}

/// Opens a graphql-transport-ws connection; `init` is the `connection_init` payload.
pub(super) async fn ws_connect(api: &Api) -> Socket {
    let mut request = format!("ws://{}/graphql/ws", api.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket upgrade on /graphql/ws");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("graphql-transport-ws"),
        "the server speaks graphql-transport-ws"
    );
    socket
}

pub(super) async fn ws_send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("send on the WebSocket");
}

/// What the server sent next.
#[derive(Debug)]
pub(super) enum Received {
    Json(Value),
    /// A close frame (code, reason), or the connection ended without one.
    Closed(Option<(u16, String)>),
    /// Nothing within the wait.
    Nothing,
}

pub(super) async fn ws_receive(socket: &mut Socket, within: Duration) -> Received {
    loop {
        let message = match tokio::time::timeout(within, socket.next()).await {
            Err(_) => return Received::Nothing,
            Ok(None) | Ok(Some(Err(_))) => return Received::Closed(None),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                return Received::Json(serde_json::from_str(text.as_str()).expect("JSON message"))
            }
            Message::Close(frame) => {
                return Received::Closed(
                    frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                )
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

/// Connects with `token` and waits for `connection_ack`.
async fn ws_subscriber(api: &Api, token: &str) -> Socket {
    let mut socket = ws_connect(api).await;
    ws_send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await;
    match ws_receive(&mut socket, STREAM_WAIT).await {
        Received::Json(ack) if ack["type"] == "connection_ack" => socket,
        other => panic!("expected connection_ack, got {other:?}"),
    }
}

/// B's event positions in log order (from B's own audit trail), optionally of one id.
async fn positions_of_b(api: &Api, token: &str, aggregate_id: Option<&str>) -> Vec<i64> {
    let data = api
        .ok(
            token,
            "query($p: Int, $id: ID) { auditTrail(aggregateId: $id, first: 200, minPosition: $p) { nodes { position } } }",
            json!({ "p": last_position(api).await, "id": aggregate_id }),
        )
        .await;
    nodes(&data, "auditTrail")
        .iter()
        .map(|n| n["position"].as_i64().unwrap())
        .collect()
}

/// An event as a stream delivered it: it must be B's, and not at a position of A.
fn check_streamed(what: &str, event: &Value, seed: &Seed) -> i64 {
    let position = event["position"]
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: an event with a position: {event}"));
    assert!(
        !seed.positions.contains(&position),
        "{what} delivered tenant A's event at position {position} to B: {event}"
    );
    assert_eq!(
        event["metadata"]["tenant_id"], B,
        "{what} delivered another tenant's event to B: {event}"
    );
    assert_no_leak(what, event, &Value::Null);
    position
}

/// Reads a Server-Sent Events body until the event at `last` (each event's `id:`
/// and `data:`), failing after [`STREAM_WAIT`].
async fn read_sse(response: reqwest::Response, last: i64) -> Vec<(i64, Value)> {
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = vec![];
    let mut events = vec![];
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    loop {
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame = String::from_utf8(buffer.drain(..end + 2).collect()).expect("UTF-8 SSE");
            let mut id = None;
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().parse::<i64>().expect("SSE id is a position"));
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                } else if line.starts_with("event:") {
                    panic!("SSE error event: {frame}");
                }
            }
            if let Some(id) = id {
                let event: Value = serde_json::from_str(&data).expect("SSE data is JSON");
                assert_eq!(
                    event["position"], id,
                    "SSE id is the event's position: {frame}"
                );
                events.push((id, event));
                if id == last {
                    return events;
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| {
                panic!("SSE: no event at position {last} within {STREAM_WAIT:?}; got {events:?}")
            })
            .expect("the SSE stream stays open")
            .expect("read the SSE stream");
        buffer.extend_from_slice(&chunk);
    }
}

/// B's streams (the `events` subscription, twice, and SSE) deliver B's events, live,
/// and nothing of A — including for an aggregate id both tenants use.
async fn b_streams_only_its_own(walk: &mut Walk<'_>, seed: &Seed) {
    let api = walk.api;
    walk.exercised.insert("Subscription.events".into());
    let mut socket = ws_subscriber(api, &walk.token).await;
    const FIELDS: &str = "position aggregateType aggregateId eventType payload metadata";
    ws_send(
        &mut socket,
        json!({ "id": "all", "type": "subscribe", "payload": {
            "query": format!("subscription {{ events(fromPosition: 0) {{ {FIELDS} }} }}") } }),
    )
    .await;
    ws_send(
        &mut socket,
        json!({ "id": "prod", "type": "subscribe", "payload": {
            "query": format!("subscription($id: ID) {{ events(fromPosition: 0, aggregateId: $id) {{ {FIELDS} }} }}"),
            "variables": { "id": "prod" } } }),
    )
    .await;
    ws_send(
        &mut socket,
        json!({ "id": "incident", "type": "subscribe", "payload": {
            "query": format!("subscription($id: ID) {{ events(fromPosition: 0, aggregateTypes: [\"incident\"], aggregateId: $id) {{ {FIELDS} }} }}"),
            "variables": { "id": seed.incident_pending } } }),
    )
    .await;
    let sse = api
        .http
        .get(format!("{}/events?from=0", api.base))
        .bearer_auth(&walk.token)
        .send()
        .await
        .expect("GET /events");
    assert_eq!(sse.status(), 200, "B opens the SSE stream");
    assert!(
        sse.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "SSE content type: {:?}",
        sse.headers()
    );

    // Live: B appends after the streams opened.
    let data = api
        .ok(
            &walk.token,
            "mutation { registerEnvironment(id: \"globex-live\", name: \"Globex Live\", class: DEV,
               n8nBaseUrl: \"https://live.n8n.globex.example\") { position } }",
            json!({}),
        )
        .await;
    let live_register = data["registerEnvironment"]["position"].as_i64().unwrap();
    let data = api
        .ok(
            &walk.token,
            "mutation { updateEnvironment(id: \"prod\", name: \"Globex Production (renamed)\") { position } }",
            json!({}),
        )
        .await;
    let live_update = data["updateEnvironment"]["position"].as_i64().unwrap();

    let mut all = vec![];
    let mut prod = vec![];
    while !(all.contains(&live_update) && prod.contains(&live_update)) {
        match ws_receive(&mut socket, STREAM_WAIT).await {
            Received::Json(message) if message["type"] == "next" => {
                let id = message["id"].as_str().unwrap_or_default().to_string();
                let event = &message["payload"]["data"]["events"];
                assert!(
                    message["payload"].get("errors").is_none(),
                    "subscription {id} failed: {message}"
                );
                let position = check_streamed(&format!("subscription {id}"), event, seed);
                match id.as_str() {
                    "all" => all.push(position),
                    "prod" => {
                        assert_eq!(event["aggregateId"], "prod", "{message}");
                        prod.push(position)
                    }
                    _ => panic!("the subscription to A's incident delivered {message}"),
                }
            }
            Received::Json(message) if message["type"] == "ping" => {
                ws_send(&mut socket, json!({ "type": "pong" })).await;
            }
            other => panic!(
                "B's subscriptions: expected B's live events up to {live_update}, got {other:?} (so far all={all:?} prod={prod:?})"
            ),
        }
    }
    // The incident subscription stayed silent while the others delivered; a little
    // longer to be sure nothing of A trickles in late.
    match ws_receive(&mut socket, Duration::from_millis(300)).await {
        Received::Nothing => {}
        other => panic!("nothing more is owed to B, got {other:?}"),
    }
    let _ = socket.close(None).await;

    let expected_all = positions_of_b(api, &walk.token, None).await;
    let expected_prod = positions_of_b(api, &walk.token, Some("prod")).await;
    assert!(
        expected_all.contains(&live_register) && expected_all.contains(&live_update),
        "B's audit trail has its live events: {expected_all:?}"
    );
    assert_eq!(
        all, expected_all,
        "subscription `events` delivers exactly B's events, in order"
    );
    assert_eq!(
        prod, expected_prod,
        "subscription `events(aggregateId: \"prod\")` delivers B's `prod` only, not A's"
    );

    let sse = read_sse(sse, live_update).await;
    let mut streamed = vec![];
    for (_, event) in &sse {
        streamed.push(check_streamed("GET /events", event, seed));
    }
    assert_eq!(
        streamed, expected_all,
        "GET /events delivers exactly B's events, in order"
    );
}

/// After B's walk, B's reads show B's own objects only, even where ids collide.
async fn b_reads_its_own_only(walk: &mut Walk<'_>, seed: &Seed) {
    let developer = context(B, Actor::new(B_ADMIN, Role::Developer));
    let committed = walk
        .api
        .domain
        .mapping(
            &developer,
            &local("prod"),
            &local(UNTRACKED),
            MappingCommand::Observe {
                environment_id: local("prod"),
                n8n_workflow_id: local(UNTRACKED),
                observation: Observation {
                    name: "Globex Inventory".into(),
                    content_hash: content_hash(1),
                    n8n_updated_at: None,
                },
                auto_link: None,
            },
        )
        .await
        .expect("B's own mapping with A's ids");
    let p = committed.position.unwrap();
    let data = walk
        .read(
            "environments",
            "query($p: Int) { environments(minPosition: $p) { id name } }",
            json!({ "p": p }),
        )
        .await;
    assert_eq!(
        data["environments"],
        json!([{ "id": "prod", "name": "Globex Production" }]),
        "B sees its own `prod` only"
    );
    let data = walk
        .read(
            "untrackedWorkflows",
            "query($p: Int) { untrackedWorkflows(environmentId: \"prod\", minPosition: $p) { nodes { n8nWorkflowId name } } }",
            json!({ "p": p }),
        )
        .await;
    assert_eq!(
        nodes(&data, "untrackedWorkflows"),
        vec![json!({ "n8nWorkflowId": UNTRACKED, "name": "Globex Inventory" })],
        "B's untracked workflows are B's own"
    );
    let data = walk
        .read(
            "workflowMatrix",
            "query($p: Int) { workflowMatrix(first: 200, minPosition: $p) { nodes { canonicalId name cells { environmentId mappingStatus name } } } }",
            json!({ "p": p }),
        )
        .await;
    assert_eq!(
        nodes(&data, "workflowMatrix"),
        vec![json!({ "canonicalId": null, "name": "Globex Inventory",
                     "cells": [{ "environmentId": "prod", "mappingStatus": "UNTRACKED", "name": "Globex Inventory" }] })],
        "B's matrix shows B's workflow only"
    );
    let data = walk
        .read(
            "eventHistory",
            "{ environment: eventHistory(aggregateType: \"environment\", aggregateId: \"prod\") { position metadata }
               mapping: eventHistory(aggregateType: \"workflow_mapping\", aggregateId: \"prod:n8n-untracked\") { position metadata } }",
            json!({}),
        )
        .await;
    for (aggregate, events) in data.as_object().unwrap() {
        let events = events.as_array().unwrap();
        assert_eq!(
            events.len(),
            1,
            "B's {aggregate} has B's one event only: {data}"
        );
        check_streamed(
            &format!("eventHistory of B's {aggregate}"),
            &events[0],
            seed,
        );
    }
    let data = walk
        .read(
            "aggregateAt",
            "{ aggregateAt(aggregateType: \"environment\", aggregateId: \"prod\") { state sequence } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["aggregateAt"]["sequence"], 1,
        "B's `prod` replays B's event only: {data}"
    );
    assert_eq!(
        data["aggregateAt"]["state"]["name"], "Globex Production",
        "{data}"
    );
    let data = walk
        .read(
            "verifyEventLog",
            "{ verifyEventLog { ok checkedEvents } }",
            json!({}),
        )
        .await;
    let own = positions_of_b(walk.api, &walk.token, None).await;
    assert_eq!(
        data["verifyEventLog"],
        json!({ "ok": true, "checkedEvents": own.len() }),
        "B verifies its own {} events only",
        own.len()
    );
}

/// B's configuration and promotions with ids A uses are B's own: B's pipeline and
/// policy read back as B's, `comparePromotion` compares B's workflows only, and a
/// promotion B creates with the id of A's promotion is a separate promotion.
async fn b_promotes_its_own(walk: &mut Walk<'_>) {
    let data = walk
        .read(
            "pipelines",
            "query($p: Int) { pipelines(minPosition: $p) { nodes { id name createdBy } } }",
            json!({ "p": last_position(walk.api).await }),
        )
        .await;
    assert_eq!(
        nodes(&data, "pipelines"),
        vec![json!({ "id": PIPELINE, "name": "Globex Path", "createdBy": B_ADMIN })],
        "B sees its own `pipe-1` only"
    );
    let data = walk
        .read(
            "pipeline",
            "query($id: ID!) { pipeline(id: $id) { id name stages { sourceEnvironmentId targetEnvironmentId } } }",
            json!({ "id": PIPELINE }),
        )
        .await;
    assert_eq!(data["pipeline"]["name"], "Globex Path", "{data}");
    let data = walk
        .read(
            "driftPolicy",
            "query($e: ID) { driftPolicy(environmentId: $e) { source closedIncidentRetentionDays
               severityTtls { criticalHours } updatedBy } }",
            json!({ "e": "prod" }),
        )
        .await;
    assert_eq!(
        data["driftPolicy"]["source"], "TENANT",
        "B's `prod` follows B's tenant policy: {data}"
    );
    assert_eq!(
        data["driftPolicy"]["closedIncidentRetentionDays"], 11,
        "{data}"
    );
    assert_eq!(data["driftPolicy"]["updatedBy"], B_ADMIN, "{data}");

    // B's own workflow to promote from `prod` to `qa`.
    walk.api
        .ok(
            &walk.token,
            REGISTER,
            json!({ "id": "qa", "name": "Globex QA", "class": "STAGING", "url": "https://qa.n8n.globex.example" }),
        )
        .await;
    let developer = context(B, Actor::new(B_ADMIN, Role::Developer));
    walk.api
        .domain
        .canonical(
            &developer,
            &local("orders"),
            CanonicalCommand::Create {
                canonical_id: local("orders"),
                name: "Globex Orders".into(),
                slug: None,
                git_path: None,
            },
        )
        .await
        .expect("B's canonical workflow");
    walk.api
        .domain
        .mapping(
            &developer,
            &local("prod"),
            &local("n8n-orders"),
            MappingCommand::Observe {
                environment_id: local("prod"),
                n8n_workflow_id: local("n8n-orders"),
                observation: Observation {
                    name: "Globex Orders".into(),
                    content_hash: content_hash(42),
                    n8n_updated_at: None,
                },
                auto_link: Some(local("orders")),
            },
        )
        .await
        .expect("B's linked workflow");

    walk.exercised.insert("Mutation.comparePromotion".into());
    let variables = json!({ "s": "prod", "t": "qa", "p": last_position(walk.api).await });
    let body = walk
        .api
        .gql(
            &walk.token,
            "mutation($s: ID!, $t: ID!, $p: Int) { comparePromotion(sourceEnvironmentId: $s,
               targetEnvironmentId: $t, minPosition: $p) { workflows { canonicalId name change } } }",
            variables.clone(),
        )
        .await;
    assert!(
        body.get("errors").is_none(),
        "B compares its own environments: {body}"
    );
    assert_no_leak("Mutation.comparePromotion (B's own)", &body, &variables);
    let compared: Vec<&str> = body["data"]["comparePromotion"]["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["canonicalId"].as_str().unwrap())
        .collect();
    assert_eq!(
        compared,
        vec!["orders"],
        "B's comparison holds B's workflows only (not A's `{CANONICAL}` linked in A's `prod`): {body}"
    );

    let promoted = walk
        .own(
            "createPromotion",
            "mutation($id: ID, $p: ID!, $s: ID!, $t: ID!) { createPromotion(id: $id, pipelineId: $p,
               sourceEnvironmentId: $s, targetEnvironmentId: $t) {
               position promotion { id pipelineId sourceEnvironmentId createdBy workflows { canonicalId name } } } }",
            json!({ "id": PROMO_PENDING, "p": PIPELINE, "s": "prod", "t": "qa" }),
        )
        .await;
    assert_eq!(
        promoted["promotion"],
        json!({ "id": PROMO_PENDING, "pipelineId": PIPELINE, "sourceEnvironmentId": "prod",
                "createdBy": B_ADMIN, "workflows": [{ "canonicalId": "orders", "name": "Globex Orders" }] }),
        "B's `{PROMO_PENDING}` is B's own"
    );
    let data = walk
        .read(
            "promotions",
            "query($p: Int) { promotions(first: 200, minPosition: $p) { nodes { id createdBy } } }",
            json!({ "p": promoted["position"] }),
        )
        .await;
    assert_eq!(
        nodes(&data, "promotions"),
        vec![json!({ "id": PROMO_PENDING, "createdBy": B_ADMIN })],
        "B lists its own promotion only"
    );
}

async fn tenant_b_can_neither_read_change_nor_stream_tenant_a(kind: Kind) {
    let api = Api::start(kind).await;
    let seed = seed_tenant_a(&api).await;
    let a_events = event_total(&api).await;
    let a_before = snapshot_of_a(&api).await;
    assert_eq!(
        a_before["verifyEventLog"]["checkedEvents"], a_events,
        "A verifies its own events: {a_before}"
    );
    matrix_keys_merge_as_async_graphql_merges_them(&api, &a_before).await;

    let mut walk = Walk {
        api: &api,
        token: api.token(B, "admin", B_ADMIN),
        exercised: BTreeSet::new(),
    };
    b_reads_nothing_of_a(&mut walk, &seed).await;
    assert_eq!(
        event_total(&api).await,
        a_events,
        "B's reads appended nothing"
    );
    b_changes_nothing_of_a(&mut walk, &seed).await;
    b_reads_its_own_only(&mut walk, &seed).await;
    b_promotes_its_own(&mut walk).await;
    b_streams_only_its_own(&mut walk, &seed).await;

    // A is untouched: the log grew by B's events only, and A reads what it read.
    let b_events = positions_of_b(&api, &walk.token, None).await.len() as i64;
    assert_eq!(
        event_total(&api).await,
        a_events + b_events,
        "the log grew by B's own {b_events} events only"
    );
    let a_after = snapshot_of_a(&api).await;
    assert_eq!(a_after, a_before, "tenant A reads the same after B's walk");

    // Coverage guard: every root operation of the served schema was walked.
    let served = schema_operations();
    assert!(
        served.len() > 20,
        "the SDL parses into operations: {served:?}"
    );
    let missing: Vec<_> = served.difference(&walk.exercised).collect();
    let unknown: Vec<_> = walk.exercised.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "operations without a tenant-isolation case (add one to tests/it/api/isolation.rs): {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "isolation cases for operations the schema does not serve: {unknown:?}"
    );
    api.stop().await;
}

/// B links its own workflow to a canonical id only A has. Link slots and canonical
/// workflows are per tenant: B must get NOT_FOUND (it has no such canonical
/// workflow) — never A's "already linked" — and B's matrix must neither borrow A's
/// canonical workflow nor lose B's workflow.
async fn linking_to_a_canonical_id_only_another_tenant_has_is_not_found(kind: Kind) {
    let api = Api::start(kind).await;
    let seed = seed_tenant_a(&api).await;
    let token = api.token(B, "admin", B_ADMIN);
    api.ok(
        &token,
        REGISTER,
        json!({ "id": "prod", "name": "Globex Production", "class": "PRODUCTION",
                "url": "https://n8n.globex.example" }),
    )
    .await;
    api.domain
        .mapping(
            &context(B, Actor::new(B_ADMIN, Role::Developer)),
            &local("prod"),
            &local(UNTRACKED),
            MappingCommand::Observe {
                environment_id: local("prod"),
                n8n_workflow_id: local(UNTRACKED),
                observation: Observation {
                    name: "Globex Inventory".into(),
                    content_hash: content_hash(1),
                    n8n_updated_at: None,
                },
                auto_link: None,
            },
        )
        .await
        .expect("B's own mapping");
    let before = event_total(&api).await;

    let variables = json!({ "e": "prod", "w": UNTRACKED, "c": CANONICAL });
    let body = api
        .gql(
            &token,
            "mutation($e: ID!, $w: ID!, $c: ID!) { linkWorkflow(environmentId: $e, n8nWorkflowId: $w,
               canonicalId: $c) { position mapping { canonicalId name status gitContentHash } } }",
            variables.clone(),
        )
        .await;
    assert_no_leak("linkWorkflow to A's canonical id", &body, &variables);
    let matrix = api
        .ok(
            &token,
            "query($p: Int) { workflowMatrix(first: 200, minPosition: $p) { nodes { canonicalId slug name
               gitContentHash gitPath cells { environmentId mappingStatus name gitContentHash } } } }",
            json!({ "p": last_position(&api).await }),
        )
        .await;
    assert_no_leak(
        "B's matrix after linking to A's canonical id",
        &matrix,
        &variables,
    );
    assert_eq!(
        code(&body["errors"][0]),
        "NOT_FOUND",
        "linkWorkflow to a canonical workflow B does not have must be NOT_FOUND; got {body}; \
         B's matrix afterwards: {matrix}"
    );
    assert_eq!(
        event_total(&api).await,
        before,
        "the refused link appended nothing"
    );
    assert!(
        seed.aggregates
            .contains(&("link_slot".to_string(), format!("prod:{CANONICAL}"))),
        "A holds the link slot B aimed at"
    );
    api.stop().await;
}

/// The guard's parser: descriptions (even ones that look like fields) are skipped,
/// renamed root types are followed, and every root field is found.
#[test]
fn the_coverage_guard_reads_every_root_field() {
    let sdl = "type Thing {\n\tid: ID!\n}\n\ntype Q {\n\t\"\"\"\n\tNote: not a field.\n\tother(x) neither\n\t\"\"\"\n\tthings(first: Int): [Thing!]!\n\t\"\"\"One line: still not a field\"\"\"\n\tthing(id: ID!): Thing\n}\n\ntype M {\n\tcreatePipeline(name: String!): Thing!\n}\n\nschema {\n\tquery: Q\n\tmutation: M\n}\n";
    let expected: BTreeSet<String> = ["Query.things", "Query.thing", "Mutation.createPipeline"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(operations_in(sdl), expected);
    let served = schema_operations();
    for operation in [
        "Query.environments",
        "Mutation.registerEnvironment",
        "Subscription.events",
    ] {
        assert!(served.contains(operation), "{operation} in {served:?}");
    }
}

both_backends!(
    tenant_b_can_neither_read_change_nor_stream_tenant_a,
    linking_to_a_canonical_id_only_another_tenant_has_is_not_found,
);
