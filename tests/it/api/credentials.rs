//! Credential mappings through the API: set, change, list, delete, the read-back, the
//! audit trail, roles, and the bad input (unknown environments, blank fields, the
//! same environment twice, deleting what is not mapped) that appends nothing.

use serde_json::{json, Value};

use super::{code, register_environment, Api};
use crate::support::{both_backends, Kind};

const TENANT: &str = "acme";

const SET: &str = "mutation($s: ID!, $t: ID!, $type: String!, $name: String!, $id: String!, $tn: String!) {
    setCredentialMapping(sourceEnvironmentId: $s, targetEnvironmentId: $t, type: $type,
      sourceName: $name, targetId: $id, targetName: $tn) {
      position mapping { sourceEnvironmentId targetEnvironmentId type sourceName targetId targetName updatedBy } } }";
const DELETE: &str = "mutation($s: ID!, $t: ID!, $type: String!, $name: String!) {
    deleteCredentialMapping(sourceEnvironmentId: $s, targetEnvironmentId: $t, type: $type, sourceName: $name) {
      position mapping { targetId } } }";
const LIST: &str = "query($s: ID, $t: ID, $p: Int) {
    credentialMappings(sourceEnvironmentId: $s, targetEnvironmentId: $t, minPosition: $p) {
      sourceEnvironmentId targetEnvironmentId type sourceName targetId targetName } }";

fn set(source: &str, target: &str, kind: &str, name: &str, id: &str, target_name: &str) -> Value {
    json!({ "s": source, "t": target, "type": kind, "name": name, "id": id, "tn": target_name })
}

async fn credential_mappings_set_list_delete(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    for (id, class) in [
        ("dev", "DEV"),
        ("staging", "STAGING"),
        ("prod", "PRODUCTION"),
    ] {
        register_environment(&api, &admin, id, class).await;
    }

    let data = api
        .ok(
            &admin,
            SET,
            set(
                "dev",
                "staging",
                "slackApi",
                " Slack Bot ",
                "41",
                "Slack Staging",
            ),
        )
        .await;
    let payload = &data["setCredentialMapping"];
    assert_eq!(
        payload["mapping"],
        json!({ "sourceEnvironmentId": "dev", "targetEnvironmentId": "staging", "type": "slackApi",
                "sourceName": "Slack Bot", "targetId": "41", "targetName": "Slack Staging",
                "updatedBy": "admin-1" }),
        "{data}"
    );
    // the same again: nothing appended
    let before = api.event_count().await;
    let data = api
        .ok(
            &admin,
            SET,
            set(
                "dev",
                "staging",
                "slackApi",
                "Slack Bot",
                "41",
                "Slack Staging",
            ),
        )
        .await;
    assert_eq!(
        data["setCredentialMapping"]["position"],
        Value::Null,
        "{data}"
    );
    assert_eq!(api.event_count().await, before);
    // another target for it, and mappings of other pairs
    api.ok(
        &admin,
        SET,
        set("dev", "staging", "slackApi", "Slack Bot", "42", "Slack Ops"),
    )
    .await;
    api.ok(
        &admin,
        SET,
        set("dev", "staging", "postgres", "Orders DB", "7", "Orders DB"),
    )
    .await;
    let data = api
        .ok(
            &admin,
            SET,
            set(
                "staging",
                "prod",
                "slackApi",
                "Slack Ops",
                "90",
                "Slack Prod",
            ),
        )
        .await;
    let position = data["setCredentialMapping"]["position"].as_i64().unwrap();

    // listed by pair, type and name; filtered by source or target
    let data = api.ok(&developer, LIST, json!({ "p": position })).await;
    let listed: Vec<(String, String, String, String)> = data["credentialMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                format!(
                    "{}>{}",
                    m["sourceEnvironmentId"].as_str().unwrap(),
                    m["targetEnvironmentId"].as_str().unwrap()
                ),
                m["type"].as_str().unwrap().to_string(),
                m["sourceName"].as_str().unwrap().to_string(),
                m["targetId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |p: &str, t: &str, n: &str, i: &str| {
        (p.to_string(), t.to_string(), n.to_string(), i.to_string())
    };
    assert_eq!(
        listed,
        vec![
            row("dev>staging", "postgres", "Orders DB", "7"),
            row("dev>staging", "slackApi", "Slack Bot", "42"),
            row("staging>prod", "slackApi", "Slack Ops", "90"),
        ]
    );
    let data = api.ok(&developer, LIST, json!({ "t": "prod" })).await;
    assert_eq!(
        data["credentialMappings"].as_array().unwrap().len(),
        1,
        "{data}"
    );
    let data = api
        .ok(&developer, LIST, json!({ "s": "dev", "t": "staging" }))
        .await;
    assert_eq!(
        data["credentialMappings"].as_array().unwrap().len(),
        2,
        "{data}"
    );

    // deleted: gone from the list, recorded in the audit trail
    let data = api
        .ok(
            &admin,
            DELETE,
            json!({ "s": "dev", "t": "staging", "type": "postgres", "name": "Orders DB" }),
        )
        .await;
    assert_eq!(
        data["deleteCredentialMapping"]["mapping"],
        Value::Null,
        "{data}"
    );
    let position = data["deleteCredentialMapping"]["position"]
        .as_i64()
        .unwrap();
    let data = api
        .ok(&developer, LIST, json!({ "s": "dev", "p": position }))
        .await;
    assert_eq!(
        data["credentialMappings"].as_array().unwrap().len(),
        1,
        "{data}"
    );

    // bad input: a clear error, nothing appended
    let before = api.event_count().await;
    for (token, query, variables, expected) in [
        (
            &developer,
            SET,
            set("dev", "staging", "slackApi", "Slack Bot", "1", "x"),
            "FORBIDDEN",
        ),
        (
            &admin,
            SET,
            set("dev", "nowhere", "slackApi", "Slack Bot", "1", "x"),
            "NOT_FOUND",
        ),
        (
            &admin,
            SET,
            set("nowhere", "staging", "slackApi", "Slack Bot", "1", "x"),
            "NOT_FOUND",
        ),
        (
            &admin,
            SET,
            set("dev", "dev", "slackApi", "Slack Bot", "1", "x"),
            "VALIDATION",
        ),
        (
            &admin,
            SET,
            set("dev", "staging", " ", "Slack Bot", "1", "x"),
            "VALIDATION",
        ),
        (
            &admin,
            SET,
            set("dev", "staging", "slackApi", "Slack Bot", "", "x"),
            "VALIDATION",
        ),
        (
            &admin,
            SET,
            set("dev", "bad id!", "slackApi", "Slack Bot", "1", "x"),
            "VALIDATION",
        ),
        (
            &admin,
            DELETE,
            json!({ "s": "dev", "t": "staging", "type": "postgres", "name": "Orders DB" }),
            "NOT_FOUND",
        ),
    ] {
        let error = api.err(token, query, variables.clone()).await;
        assert_eq!(code(&error), expected, "{variables}: {error}");
    }
    assert_eq!(api.event_count().await, before, "refusals append nothing");

    // another tenant sees none of them
    let other = api.token("globex", "admin", "g-1");
    let data = api.ok(&other, LIST, json!({})).await;
    assert_eq!(data["credentialMappings"], json!([]), "{data}");
}

both_backends!(credential_mappings_set_list_delete);
