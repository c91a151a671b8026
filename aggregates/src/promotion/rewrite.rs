//! Rewriting a workflow for the environment it is promoted to (DOMAIN.md §5).
//!
//! A workflow names things that exist per n8n instance: credentials (by id, with a
//! name) and other workflows (by n8n id). Promoted as it is, it would point at the
//! source instance's ids. [`rewrite`] maps both to the target:
//!
//! - **credentials** (`nodes[].credentials.{type} = {id, name}`): the caller's
//!   [`RewriteTargets::credential`] answers by type and name (an explicit mapping
//!   first, then the same type and name among the target's known credentials). An
//!   unknown one is a [`Problem::UnmappedCredential`], unless placeholders are
//!   allowed: then the reference is written by name only (n8n substitutes the
//!   target's unique credential of that name and type on write, or keeps a dangling
//!   reference) and listed in [`Rewritten::placeholders`];
//! - **sub-workflows**, in every form n8n 1.x stores them: `executeWorkflow` and
//!   `@n8n/n8n-nodes-langchain.toolWorkflow` nodes' `parameters.workflowId`, either a
//!   plain string (typeVersion 1) or a resource locator (`{"__rl": true, "value",
//!   "mode", "cachedResultUrl", …}`); `settings.errorWorkflow`; and
//!   `settings.callerIds` (comma-separated ids). Each source id is mapped through the
//!   canonical mapping to the target's id ([`RewriteTargets::workflow`]). An id
//!   without a target is a [`Problem::UnknownSubWorkflow`]; a value starting with `=`
//!   is an n8n expression, which cannot be rewritten safely: a
//!   [`Problem::ExpressionReference`].
//!
//! Pure: the lookups arrive through [`RewriteTargets`]; nothing here does I/O.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Node types whose `parameters.workflowId` names another workflow.
pub const SUB_WORKFLOW_NODE_TYPES: [&str; 2] = [
    "n8n-nodes-base.executeWorkflow",
    "@n8n/n8n-nodes-langchain.toolWorkflow",
];

/// A credential in the target instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCredential {
    pub id: String,
    pub name: String,
}

/// What the target environment holds, as the caller knows it.
pub trait RewriteTargets {
    /// The target's credential for a source credential of this type and name.
    fn credential(&self, credential_type: &str, name: &str) -> Option<TargetCredential>;
    /// The target's n8n id of the workflow the source knows as `source_id`.
    fn workflow(&self, source_id: &str) -> Option<String>;
}

/// A reference written by name only, for n8n to resolve on write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Placeholder {
    pub node: String,
    pub credential_type: String,
    pub name: String,
}

/// Why a workflow cannot be rewritten for the target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// No target credential of this type and name, and placeholders are not allowed.
    UnmappedCredential {
        node: String,
        credential_type: String,
        name: String,
    },
    /// A referenced workflow that the target does not have.
    UnknownSubWorkflow {
        location: String,
        workflow_id: String,
    },
    /// A reference computed by an n8n expression.
    ExpressionReference {
        location: String,
        expression: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::UnmappedCredential {
                node,
                credential_type,
                name,
            } => write!(
                f,
                "node {node:?}: no credential {name:?} of type {credential_type} in the target"
            ),
            Problem::UnknownSubWorkflow {
                location,
                workflow_id,
            } => write!(
                f,
                "{location}: workflow {workflow_id} is not in the target and not promoted with it"
            ),
            Problem::ExpressionReference {
                location,
                expression,
            } => write!(
                f,
                "{location}: the workflow is chosen by the expression {expression:?}, which cannot be rewritten"
            ),
        }
    }
}

/// A workflow ready for the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    pub workflow: Value,
    /// Credential references written by name only.
    pub placeholders: Vec<Placeholder>,
}

/// The workflow ids a workflow references (every form), for ordering a promotion so
/// that referenced workflows are pushed first. Expressions are left out.
pub fn referenced_workflows(workflow: &Value) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    visit_references(workflow, |reference| {
        if let Reference::Id(id) = reference.value {
            ids.insert(id.to_string());
        }
    });
    ids
}

/// Rewrites `workflow` for the target. Every problem is reported, not just the first.
pub fn rewrite(
    workflow: &Value,
    targets: &dyn RewriteTargets,
    allow_placeholder_credentials: bool,
) -> Result<Rewritten, Vec<Problem>> {
    let mut out = workflow.clone();
    let mut problems = Vec::new();
    let mut placeholders = Vec::new();
    if let Some(nodes) = out.get_mut("nodes").and_then(Value::as_array_mut) {
        for node in nodes {
            let name = node
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(credentials) = node.get_mut("credentials").and_then(Value::as_object_mut) {
                for (credential_type, reference) in credentials.iter_mut() {
                    let Some(source_name) = reference
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                    else {
                        continue;
                    };
                    match targets.credential(credential_type, &source_name) {
                        Some(target) => {
                            *reference = credential_value(Some(&target.id), &target.name);
                        }
                        None if allow_placeholder_credentials => {
                            *reference = credential_value(None, &source_name);
                            placeholders.push(Placeholder {
                                node: name.clone(),
                                credential_type: credential_type.clone(),
                                name: source_name,
                            });
                        }
                        None => problems.push(Problem::UnmappedCredential {
                            node: name.clone(),
                            credential_type: credential_type.clone(),
                            name: source_name,
                        }),
                    }
                }
            }
        }
    }
    rewrite_references(&mut out, targets, &mut problems);
    if problems.is_empty() {
        placeholders.sort();
        Ok(Rewritten {
            workflow: out,
            placeholders,
        })
    } else {
        problems.sort();
        problems.dedup();
        Err(problems)
    }
}

fn credential_value(id: Option<&str>, name: &str) -> Value {
    let mut reference = Map::new();
    if let Some(id) = id {
        reference.insert("id".into(), Value::from(id));
    }
    reference.insert("name".into(), Value::from(name));
    Value::Object(reference)
}

/// A workflow reference found in a workflow.
struct Found<'v> {
    location: String,
    value: Reference<'v>,
}

enum Reference<'v> {
    Id(&'v str),
    Expression(&'v str),
}

fn classify(value: &str) -> Option<Reference<'_>> {
    let value = value.trim();
    if value.is_empty() {
        None
    } else if value.starts_with('=') {
        Some(Reference::Expression(value))
    } else {
        Some(Reference::Id(value))
    }
}

/// Whether a sub-workflow node reads its workflow from the database by id (the
/// default; `source` may instead be a JSON parameter, a URL or a local file).
fn by_id(parameters: &Value) -> bool {
    matches!(
        parameters.get("source").and_then(Value::as_str),
        None | Some("database")
    )
}

/// The id a `workflowId` parameter holds: a plain string, or a resource locator's
/// `value`.
fn locator_value(parameter: &Value) -> Option<&str> {
    match parameter {
        Value::String(id) => Some(id),
        Value::Object(locator) => locator.get("value").and_then(Value::as_str),
        _ => None,
    }
}

fn visit_references<'v>(workflow: &'v Value, mut visit: impl FnMut(Found<'v>)) {
    if let Some(nodes) = workflow.get("nodes").and_then(Value::as_array) {
        for node in nodes {
            let Some(node_type) = node.get("type").and_then(Value::as_str) else {
                continue;
            };
            if !SUB_WORKFLOW_NODE_TYPES.contains(&node_type) {
                continue;
            }
            let Some(parameters) = node.get("parameters") else {
                continue;
            };
            if !by_id(parameters) {
                continue;
            }
            let name = node.get("name").and_then(Value::as_str).unwrap_or("");
            if let Some(value) = parameters
                .get("workflowId")
                .and_then(locator_value)
                .and_then(classify)
            {
                visit(Found {
                    location: format!("node {name:?}"),
                    value,
                });
            }
        }
    }
    let Some(settings) = workflow.get("settings") else {
        return;
    };
    if let Some(value) = settings
        .get("errorWorkflow")
        .and_then(Value::as_str)
        .and_then(classify)
    {
        visit(Found {
            location: "settings.errorWorkflow".into(),
            value,
        });
    }
    if let Some(callers) = settings.get("callerIds").and_then(Value::as_str) {
        if let Some(Reference::Expression(expression)) = classify(callers) {
            visit(Found {
                location: "settings.callerIds".into(),
                value: Reference::Expression(expression),
            });
        } else {
            for id in callers.split(',').filter_map(classify) {
                visit(Found {
                    location: "settings.callerIds".into(),
                    value: id,
                });
            }
        }
    }
}

fn rewrite_references(
    workflow: &mut Value,
    targets: &dyn RewriteTargets,
    problems: &mut Vec<Problem>,
) {
    // Judge first (every problem is reported), then write.
    let mut any = false;
    visit_references(workflow, |found| match found.value {
        Reference::Expression(expression) => problems.push(Problem::ExpressionReference {
            location: found.location,
            expression: expression.to_string(),
        }),
        Reference::Id(id) => {
            if targets.workflow(id).is_none() {
                problems.push(Problem::UnknownSubWorkflow {
                    location: found.location,
                    workflow_id: id.to_string(),
                });
            }
            any = true;
        }
    });
    if !problems.is_empty() || !any {
        return;
    }
    let map = |id: &str| -> String {
        targets
            .workflow(id.trim())
            .unwrap_or_else(|| id.trim().to_string())
    };
    if let Some(nodes) = workflow.get_mut("nodes").and_then(Value::as_array_mut) {
        for node in nodes {
            let is_sub = node
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| SUB_WORKFLOW_NODE_TYPES.contains(&t));
            let Some(parameters) = node.get_mut("parameters") else {
                continue;
            };
            if !is_sub || !by_id(parameters) {
                continue;
            }
            match parameters.get_mut("workflowId") {
                Some(Value::String(id)) if !id.trim().is_empty() => *id = map(id),
                Some(Value::Object(locator)) => {
                    let Some(source) = locator.get("value").and_then(Value::as_str) else {
                        continue;
                    };
                    if source.trim().is_empty() {
                        continue;
                    }
                    let target = map(source);
                    if locator.contains_key("cachedResultUrl") {
                        locator.insert(
                            "cachedResultUrl".into(),
                            Value::from(format!("/workflow/{target}")),
                        );
                    }
                    locator.insert("value".into(), Value::from(target));
                }
                _ => {}
            }
        }
    }
    let Some(settings) = workflow.get_mut("settings").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(Value::String(id)) = settings.get_mut("errorWorkflow") {
        if !id.trim().is_empty() {
            *id = map(id);
        }
    }
    if let Some(Value::String(callers)) = settings.get_mut("callerIds") {
        *callers = callers
            .split(',')
            .filter(|id| !id.trim().is_empty())
            .map(map)
            .collect::<Vec<_>>()
            .join(",");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    struct Targets {
        credentials: HashMap<(String, String), TargetCredential>,
        workflows: HashMap<String, String>,
    }

    impl RewriteTargets for Targets {
        fn credential(&self, credential_type: &str, name: &str) -> Option<TargetCredential> {
            self.credentials
                .get(&(credential_type.to_string(), name.to_string()))
                .cloned()
        }
        fn workflow(&self, source_id: &str) -> Option<String> {
            self.workflows.get(source_id).cloned()
        }
    }

    fn targets() -> Targets {
        Targets {
            credentials: HashMap::from([(
                ("slackApi".to_string(), "Slack dev".to_string()),
                TargetCredential {
                    id: "cred-stg-9".into(),
                    name: "Slack staging".into(),
                },
            )]),
            workflows: HashMap::from([
                ("dev-sub".to_string(), "stg-sub".to_string()),
                ("dev-err".to_string(), "stg-err".to_string()),
                ("dev-a".to_string(), "stg-a".to_string()),
            ]),
        }
    }

    fn workflow() -> Value {
        json!({
            "name": "Order processing",
            "nodes": [
                {"name": "Notify", "type": "n8n-nodes-base.slack", "typeVersion": 2,
                 "parameters": {}, "credentials": {"slackApi": {"id": "cred-dev-1", "name": "Slack dev"}}},
                {"name": "Old call", "type": "n8n-nodes-base.executeWorkflow", "typeVersion": 1,
                 "parameters": {"workflowId": "dev-sub"}},
                {"name": "New call", "type": "n8n-nodes-base.executeWorkflow", "typeVersion": 1.1,
                 "parameters": {"workflowId": {"__rl": true, "value": "dev-sub", "mode": "list",
                    "cachedResultName": "Sub", "cachedResultUrl": "/workflow/dev-sub"}}},
                {"name": "Tool", "type": "@n8n/n8n-nodes-langchain.toolWorkflow", "typeVersion": 2,
                 "parameters": {"workflowId": {"__rl": true, "value": "dev-a", "mode": "id"}}},
                {"name": "From URL", "type": "n8n-nodes-base.executeWorkflow", "typeVersion": 1,
                 "parameters": {"source": "url", "workflowId": "whatever"}}
            ],
            "connections": {},
            "settings": {"errorWorkflow": "dev-err", "callerIds": "dev-a, dev-sub", "executionOrder": "v1"}
        })
    }

    #[test]
    fn every_reference_form_is_rewritten() {
        let rewritten = rewrite(&workflow(), &targets(), false).unwrap();
        let w = &rewritten.workflow;
        assert_eq!(
            w["nodes"][0]["credentials"]["slackApi"],
            json!({"id": "cred-stg-9", "name": "Slack staging"})
        );
        assert_eq!(w["nodes"][1]["parameters"]["workflowId"], "stg-sub");
        let locator = &w["nodes"][2]["parameters"]["workflowId"];
        assert_eq!(locator["value"], "stg-sub");
        assert_eq!(locator["cachedResultUrl"], "/workflow/stg-sub");
        assert_eq!(locator["mode"], "list");
        assert_eq!(w["nodes"][3]["parameters"]["workflowId"]["value"], "stg-a");
        assert_eq!(w["nodes"][4]["parameters"]["workflowId"], "whatever");
        assert_eq!(w["settings"]["errorWorkflow"], "stg-err");
        assert_eq!(w["settings"]["callerIds"], "stg-a,stg-sub");
        assert_eq!(w["settings"]["executionOrder"], "v1");
        assert!(rewritten.placeholders.is_empty());
        assert_eq!(
            referenced_workflows(&workflow()),
            BTreeSet::from(["dev-a".into(), "dev-err".into(), "dev-sub".into()])
        );
    }

    #[test]
    fn unknown_credentials_fail_or_become_placeholders() {
        let mut w = workflow();
        w["nodes"][0]["credentials"]["slackApi"]["name"] = json!("Slack other");
        let problems = rewrite(&w, &targets(), false).unwrap_err();
        assert_eq!(
            problems,
            vec![Problem::UnmappedCredential {
                node: "Notify".into(),
                credential_type: "slackApi".into(),
                name: "Slack other".into()
            }]
        );
        let rewritten = rewrite(&w, &targets(), true).unwrap();
        assert_eq!(
            rewritten.workflow["nodes"][0]["credentials"]["slackApi"],
            json!({"name": "Slack other"})
        );
        assert_eq!(rewritten.placeholders.len(), 1);
    }

    #[test]
    fn missing_sub_workflows_and_expressions_are_named() {
        let mut w = workflow();
        w["nodes"][1]["parameters"]["workflowId"] = json!("dev-missing");
        w["nodes"][3]["parameters"]["workflowId"]["value"] = json!("={{ $json.target }}");
        let problems = rewrite(&w, &targets(), false).unwrap_err();
        assert_eq!(
            problems,
            vec![
                Problem::UnknownSubWorkflow {
                    location: "node \"Old call\"".into(),
                    workflow_id: "dev-missing".into()
                },
                Problem::ExpressionReference {
                    location: "node \"Tool\"".into(),
                    expression: "={{ $json.target }}".into()
                },
            ]
        );
        assert!(problems.iter().all(|p| !p.to_string().is_empty()));
    }
}
