//! What a deployment needs to know before it touches the target (DOMAIN.md §5):
//! which target credential a source credential becomes, and in which order the
//! promoted workflows are pushed.
//!
//! Pure, like [`super::rewrite`]: the credential mappings and the target's known
//! credentials arrive as values.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::rewrite::{referenced_workflows, TargetCredential};
use crate::credentials::CredentialMap;
use crate::environment::KnownCredential;

/// The target credential for a source credential: the explicit mapping of the
/// (source, target) pair first, then the one credential of the same type and name
/// among the target's known credentials. Two known credentials of that type and
/// name are ambiguous: no answer (n8n itself would keep a dangling reference).
pub fn target_credential(
    explicit: &CredentialMap,
    known: &[KnownCredential],
    credential_type: &str,
    name: &str,
) -> Option<TargetCredential> {
    if let Some(target) = explicit.target(credential_type, name) {
        return Some(TargetCredential {
            id: target.target_id.clone(),
            name: target.target_name.clone(),
        });
    }
    let mut same = known
        .iter()
        .filter(|c| c.kind == credential_type && c.name == name);
    match (same.next(), same.next()) {
        (Some(only), None) => Some(TargetCredential {
            id: only.id.clone(),
            name: only.name.clone(),
        }),
        _ => None,
    }
}

/// The order in which promoted workflows are pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOrder {
    /// Every workflow after the promoted workflows it references (by id otherwise).
    pub order: Vec<String>,
    /// Workflows that reference each other in a cycle (by id): they come last, and
    /// one of them that the target does not have yet cannot be created with its
    /// references rewritten.
    pub cycle: Vec<String>,
}

/// Orders `workflows` (source id → workflow) so that a workflow referenced by
/// another of them is pushed first; references to workflows outside the promotion
/// do not order anything. Deterministic: among workflows free to go, the smallest
/// id first.
pub fn push_order(workflows: &BTreeMap<String, Value>) -> PushOrder {
    // what each references within the promotion (a self-reference orders nothing)
    let mut waits_for: BTreeMap<&str, BTreeSet<String>> = workflows
        .iter()
        .map(|(id, workflow)| {
            let within = referenced_workflows(workflow)
                .into_iter()
                .filter(|r| r != id && workflows.contains_key(r))
                .collect();
            (id.as_str(), within)
        })
        .collect();
    let mut order = Vec::with_capacity(workflows.len());
    loop {
        let ready: Vec<String> = waits_for
            .iter()
            .filter(|(_, refs)| refs.is_empty())
            .map(|(id, _)| id.to_string())
            .collect();
        let Some(next) = ready.into_iter().next() else {
            break;
        };
        waits_for.remove(next.as_str());
        for refs in waits_for.values_mut() {
            refs.remove(&next);
        }
        order.push(next);
    }
    let cycle: Vec<String> = waits_for.keys().map(|id| id.to_string()).collect();
    order.extend(cycle.iter().cloned());
    PushOrder { order, cycle }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialMapEvent;
    use cqrs_es::Aggregate;
    use serde_json::json;

    fn known(kind: &str, id: &str, name: &str) -> KnownCredential {
        KnownCredential {
            kind: kind.into(),
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn explicit_mapping_first_then_the_unique_same_name() {
        let mut explicit = CredentialMap::default();
        explicit.apply(CredentialMapEvent::Set {
            credential_type: "slackApi".into(),
            source_name: "Slack Bot".into(),
            target_id: "41".into(),
            target_name: "Slack Prod".into(),
        });
        let known = vec![
            known("slackApi", "9", "Slack Bot"),
            known("postgres", "7", "Orders DB"),
            known("httpHeaderAuth", "1", "Twin"),
            known("httpHeaderAuth", "2", "Twin"),
        ];
        let target =
            |kind: &str, name: &str| target_credential(&explicit, &known, kind, name).map(|t| t.id);
        assert_eq!(target("slackApi", "Slack Bot").as_deref(), Some("41"));
        assert_eq!(target("postgres", "Orders DB").as_deref(), Some("7"));
        assert_eq!(
            target("postgres", "Slack Bot"),
            None,
            "the type must match too"
        );
        assert_eq!(target("httpHeaderAuth", "Twin"), None, "ambiguous");
        assert_eq!(target("slackApi", "Nobody"), None);
    }

    fn calling(ids: &[&str]) -> Value {
        json!({ "nodes": ids.iter().enumerate().map(|(i, id)| json!({
            "name": format!("call {i}"), "type": "n8n-nodes-base.executeWorkflow",
            "typeVersion": 1, "parameters": { "workflowId": id } })).collect::<Vec<_>>(),
            "settings": {} })
    }

    #[test]
    fn referenced_workflows_go_first_and_cycles_last() {
        let workflows: BTreeMap<String, Value> = [
            ("a", calling(&["b", "outside"])),
            ("b", calling(&["c"])),
            ("c", calling(&[])),
            ("d", calling(&["d"])),
            ("x", calling(&["y"])),
            ("y", calling(&["x"])),
        ]
        .into_iter()
        .map(|(id, w)| (id.to_string(), w))
        .collect();
        let plan = push_order(&workflows);
        assert_eq!(plan.order, ["c", "b", "a", "d", "x", "y"]);
        assert_eq!(plan.cycle, ["x", "y"]);
        // the error workflow of the settings orders too
        let workflows: BTreeMap<String, Value> = [
            (
                "main",
                json!({ "nodes": [], "settings": { "errorWorkflow": "alert" } }),
            ),
            ("alert", calling(&[])),
        ]
        .into_iter()
        .map(|(id, w)| (id.to_string(), w))
        .collect();
        assert_eq!(push_order(&workflows).order, ["alert", "main"]);
    }
}
