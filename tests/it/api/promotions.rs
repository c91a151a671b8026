//! Pipelines, drift policies and a promotion from creation to its deployment,
//! through the API: comparison, gates (and a blocked one), approval by another admin,
//! deployment, and the promotion and deployment state machines' refusals.

use aggregates::canonical::CanonicalCommand;
use aggregates::content::ContentHash;
use aggregates::kernel::command::Role;
use aggregates::mapping::{MappingCommand, Observation};
use serde_json::{json, Value};

use super::walkthrough::{open_incident, TENANT};
use super::{code, register_environment, Api};
use crate::support::{both_backends, ctx, id, Kind};

fn hash(n: u32) -> ContentHash {
    ContentHash::parse(&format!("{n:064x}")).unwrap()
}

/// A canonical workflow `c` running in `environment` with content `version`.
async fn run_workflow(api: &Api, environment: &str, c: u32, version: u32) -> i64 {
    let system = ctx(TENANT, Role::System);
    let canonical = format!("wf-{c}");
    let _ = api
        .domain
        .canonical(
            &system,
            &id(&canonical),
            CanonicalCommand::Create {
                canonical_id: id(&canonical),
                name: format!("Workflow {c}"),
                slug: None,
                git_path: None,
            },
        )
        .await;
    let n8n = format!("{environment}-n8n-{c}");
    let committed = api
        .domain
        .mapping(
            &system,
            &id(environment),
            &id(&n8n),
            MappingCommand::Observe {
                environment_id: id(environment),
                n8n_workflow_id: id(&n8n),
                observation: Observation {
                    name: format!("Workflow {c}"),
                    content_hash: hash(version),
                    n8n_updated_at: None,
                },
                auto_link: Some(id(&canonical)),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        committed.state.canonical_id.as_deref(),
        Some(canonical.as_str())
    );
    committed.position.unwrap()
}

const PROMOTION: &str = "id status sourceEnvironmentId targetEnvironmentId requiresApproval
    gateResults { gate passed blocking message } workflows { canonicalId name sourceContentHash }
    createdBy approvedBy deploymentId";

async fn promotion_from_pipeline_to_deployment(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let approver = api.token(TENANT, "admin", "admin-2");
    let developer = api.token(TENANT, "developer", "dev-1");
    for (environment, class) in [
        ("dev", "DEV"),
        ("staging", "STAGING"),
        ("production", "PRODUCTION"),
    ] {
        register_environment(&api, &admin, environment, class).await;
    }

    // a pipeline dev → staging → production; production needs an approval
    let created = api
        .ok(
            &admin,
            "mutation { createPipeline(id: \"main\", name: \"Main\", stages: [
               { sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\" },
               { sourceEnvironmentId: \"staging\", targetEnvironmentId: \"production\",
                 gates: { requireApproval: true, blockOnActiveDrift: true } } ]) {
               position pipeline { id name active stages { sourceEnvironmentId targetEnvironmentId
                 gates { requireCleanDrift blockOnActiveDrift requireApproval allowSelfApproval } } } } }",
            json!({}),
        )
        .await;
    let pipeline = &created["createPipeline"]["pipeline"];
    assert_eq!(pipeline["active"], true);
    assert_eq!(
        pipeline["stages"][1]["gates"],
        json!({ "requireCleanDrift": true, "blockOnActiveDrift": true, "requireApproval": true, "allowSelfApproval": false })
    );
    // developers may not configure pipelines
    let refused = api
        .err(
            &developer,
            "mutation { updatePipeline(id: \"main\", name: \"Mine\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "FORBIDDEN");
    let renamed = api
        .ok(&admin, "mutation { updatePipeline(id: \"main\", description: \"dev to prod\") { position pipeline { description } } }", json!({}))
        .await;
    assert_eq!(
        renamed["updatePipeline"]["pipeline"]["description"],
        "dev to prod"
    );

    // the tenant's drift policy, and an override for production
    let policy = api
        .ok(
            &admin,
            "mutation { setDriftPolicy(policy: { criticalTtlHours: 12, enforceTtl: true }, reason: \"stricter\") {
               position policy { source scope severityTtls { criticalHours highHours } enforceTtl } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        policy["setDriftPolicy"]["policy"],
        json!({ "source": "TENANT", "scope": "tenant", "severityTtls": { "criticalHours": 12, "highHours": 48 }, "enforceTtl": true })
    );
    let data = api
        .ok(
            &developer,
            "{ driftPolicy(environmentId: \"production\") { source enforceTtl } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["driftPolicy"],
        json!({ "source": "TENANT", "enforceTtl": true })
    );
    let refused = api
        .err(
            &admin,
            "mutation { setDriftPolicy(environmentId: \"nowhere\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "NOT_FOUND");

    // dev runs three workflows; staging runs one of them, in an older version
    for c in 1..=3 {
        run_workflow(&api, "dev", c, 100 + c).await;
    }
    let last = run_workflow(&api, "staging", 1, 1).await;
    let compared = api
        .ok(
            &developer,
            "mutation($p: Int) { comparePromotion(sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\", minPosition: $p) {
               position workflows { canonicalId name change targetHotfix } } }",
            json!({ "p": last }),
        )
        .await;
    let changes: Vec<(String, String)> = compared["comparePromotion"]["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["canonicalId"].as_str().unwrap().into(),
                w["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("wf-1".into(), "CHANGED".into()),
            ("wf-2".into(), "NEW".into()),
            ("wf-3".into(), "NEW".into())
        ]
    );
    assert_eq!(compared["comparePromotion"]["position"], Value::Null);

    // dev → staging: no approval needed, gates pass
    let promoted = api
        .ok(
            &admin,
            &format!("mutation {{ createPromotion(id: \"p1\", pipelineId: \"main\", sourceEnvironmentId: \"dev\",
               targetEnvironmentId: \"staging\", workflowIds: [\"wf-1\", \"wf-2\"]) {{ position promotion {{ {PROMOTION} }} }} }}"),
            json!({}),
        )
        .await;
    let p1 = &promoted["createPromotion"]["promotion"];
    assert_eq!(p1["status"], "APPROVED", "{p1}");
    assert_eq!(p1["workflows"].as_array().unwrap().len(), 2);
    assert_eq!(p1["workflows"][0]["sourceContentHash"], hash(101).as_str());
    assert!(
        p1["gateResults"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["passed"] == true),
        "{p1}"
    );
    let deployed = api
        .ok(
            &admin,
            "mutation { deployPromotion(promotionId: \"p1\", scheduledFor: \"2030-01-01T00:00:00Z\") {
               position deployment { id promotionId status scheduledFor workflows { workflowId name status } promotion { id status } } } }",
            json!({}),
        )
        .await;
    let deployment = &deployed["deployPromotion"]["deployment"];
    assert_eq!(deployment["id"], "p1.1");
    assert_eq!(deployment["status"], "SCHEDULED");
    assert_eq!(deployment["promotion"]["id"], "p1");
    assert_eq!(deployment["workflows"][1]["status"], "PENDING");
    // one live deployment per promotion
    let refused = api
        .err(
            &admin,
            "mutation { deployPromotion(promotionId: \"p1\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "CONFLICT", "{refused}");
    let cancelled = api
        .ok(&admin, "mutation { cancelDeployment(id: \"p1.1\", reason: \"wrong day\") { deployment { status } } }", json!({}))
        .await;
    assert_eq!(
        cancelled["cancelDeployment"]["deployment"]["status"],
        "CANCELLED"
    );
    let refused = api
        .err(
            &admin,
            "mutation { cancelDeployment(id: \"p1.1\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "INVALID_TRANSITION");
    assert_eq!(refused["extensions"]["from"], "cancelled");
    // a time in the past is refused, and takes no deployment id
    let refused = api
        .err(
            &admin,
            "mutation { deployPromotion(promotionId: \"p1\", scheduledFor: \"2020-01-01T00:00:00Z\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "VALIDATION", "{refused}");
    assert_eq!(refused["extensions"]["field"], "scheduledFor", "{refused}");
    let again = api
        .ok(
            &admin,
            "mutation { deployPromotion(promotionId: \"p1\") { deployment { id status } } }",
            json!({}),
        )
        .await;
    // deployed now: started at once (and run in the background)
    assert_eq!(again["deployPromotion"]["deployment"]["id"], "p1.2");
    assert_ne!(
        again["deployPromotion"]["deployment"]["status"], "PENDING",
        "{again}"
    );
    // these environments have no n8n key: the run fails before touching anything
    let ended = crate::deployments::ended(&api, &admin, "p1.2").await;
    assert_eq!(ended["status"], "FAILED", "{ended}");
    assert!(
        ended["reason"].as_str().unwrap().contains("n8n API key"),
        "{ended}"
    );
    assert_eq!(ended["promotion"]["status"], "FAILED", "{ended}");

    // staging → production: approval required, by another admin
    run_workflow(&api, "staging", 2, 102).await;
    let promoted = api
        .ok(
            &admin,
            &format!("mutation {{ createPromotion(id: \"p2\", pipelineId: \"main\", sourceEnvironmentId: \"staging\",
               targetEnvironmentId: \"production\") {{ promotion {{ {PROMOTION} }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(
        promoted["createPromotion"]["promotion"]["status"],
        "PENDING_APPROVAL"
    );
    let refused = api
        .err(
            &admin,
            "mutation { deployPromotion(promotionId: \"p2\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "INVALID_TRANSITION", "{refused}");
    assert_eq!(refused["extensions"]["from"], "pending_approval");
    assert_eq!(
        refused["extensions"]["allowed"],
        json!(["approved", "rejected", "cancelled"])
    );
    let refused = api
        .err(
            &admin,
            "mutation { approvePromotion(id: \"p2\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(
        code(&refused),
        "FORBIDDEN",
        "the creator may not approve: {refused}"
    );
    let approved = api
        .ok(
            &approver,
            "mutation { approvePromotion(id: \"p2\") { promotion { status approvedBy } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        approved["approvePromotion"]["promotion"],
        json!({ "status": "APPROVED", "approvedBy": "admin-2" })
    );
    // cancelled before it ran: it cannot be deployed any more
    api.ok(
        &admin,
        "mutation { cancelPromotion(id: \"p2\", reason: \"not this week\") { position } }",
        json!({}),
    )
    .await;
    let refused = api
        .err(
            &admin,
            "mutation { deployPromotion(promotionId: \"p2\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "INVALID_TRANSITION", "{refused}");
    assert_eq!(refused["extensions"]["from"], "cancelled", "{refused}");

    // an active incident on production blocks the next promotion: recorded as failed
    open_incident(&api, TENANT, "production").await;
    let blocked = api
        .err(
            &admin,
            "mutation { createPromotion(id: \"p3\", pipelineId: \"main\", sourceEnvironmentId: \"staging\",
               targetEnvironmentId: \"production\", workflowIds: [\"wf-2\"]) { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&blocked), "GATE_BLOCKED", "{blocked}");
    assert_eq!(blocked["extensions"]["promotionId"], "p3");
    let gates = blocked["extensions"]["gateResults"].as_array().unwrap();
    let gate = gates
        .iter()
        .find(|g| g["gate"] == "block_on_active_drift")
        .unwrap();
    assert_eq!(gate["passed"], false);
    let position = blocked["extensions"]["position"].as_i64().unwrap();
    let data = api
        .ok(&admin, "query($p: Int) { promotion(id: \"p3\", minPosition: $p) { status gateResults { gate passed } } }", json!({ "p": position }))
        .await;
    assert_eq!(data["promotion"]["status"], "FAILED");
    // a pipeline stage that does not exist, an unknown pipeline
    let refused = api
        .err(&admin, "mutation { createPromotion(pipelineId: \"main\", sourceEnvironmentId: \"dev\", targetEnvironmentId: \"production\") { position } }", json!({}))
        .await;
    assert_eq!(code(&refused), "VALIDATION", "{refused}");
    let refused = api
        .err(&admin, "mutation { createPromotion(pipelineId: \"nope\", sourceEnvironmentId: \"dev\", targetEnvironmentId: \"staging\") { position } }", json!({}))
        .await;
    assert_eq!(code(&refused), "NOT_FOUND", "{refused}");

    // lists
    let data = api
        .ok(
            &admin,
            "{ pipelines { edges { node { id } } } promotions(first: 10) { edges { node { id status } } }
               deployments(promotionId: \"p1\") { edges { node { id status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["pipelines"]["edges"][0]["node"]["id"], "main");
    assert_eq!(data["promotions"]["edges"].as_array().unwrap().len(), 3);
    assert_eq!(data["deployments"]["edges"].as_array().unwrap().len(), 2);
    api.stop().await;
}

both_backends!(promotion_from_pipeline_to_deployment);
