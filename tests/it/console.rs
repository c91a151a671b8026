//! The web console's first pages over HTTP (issue 16, carried forward): sign-in and
//! sign-out with the session cookie and CSRF, the matrix with its filters, counts
//! and pages, the environments page, and bad input (forged cookie, missing CSRF
//! token, huge search, bad cursor, unknown page, another tenant).

use reqwest::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::deployments::Setup;
use crate::support::{both_backends, Kind};

both_backends!(
    sign_in_browse_the_matrix_and_sign_out,
    bad_sessions_forms_and_pages_change_nothing,
    an_incident_is_walked_through_its_forms,
    a_promotion_is_compared_created_approved_and_deployed,
    a_sign_in_link_opens_one_session,
    a_rolled_back_deployment_shows_its_recovery_and_unpins,
);

/// Waits until the read models the pages read hold every event so far (the pages,
/// like a browser, read them as they stand).
async fn settle(s: &Setup) {
    let head = s.api.store.store.last_position().await.unwrap();
    s.api
        .ok(
            &s.admin,
            "query($p: Int) { workflowMatrix(first: 1, minPosition: $p) { nodes { name } }
               environments(minPosition: $p) { id }
               incidents(first: 1, minPosition: $p) { nodes { id } } }",
            json!({ "p": head }),
        )
        .await;
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; returns the session cookie (`name=value`).
async fn sign_in(base: &str, token: &str) -> String {
    let response = client()
        .post(format!("{base}/signin"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/matrix");
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    set.split(';').next().unwrap().to_string()
}

async fn get(base: &str, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = client()
        .get(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// The CSRF token the page's sign-out form carries.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn sign_in_browse_the_matrix_and_sign_out(kind: Kind) {
    let s = Setup::new(kind).await;
    settle(&s).await;
    let base = s.api.base.clone();
    // the sign-in page
    let (status, page) = get(&base, "", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Sign in to workflowops"), "{page}");
    assert!(page.contains("<label for=\"token\">"), "labelled: {page}");
    // a bad token is refused, with words and no cookie
    let refused = client()
        .post(format!("{base}/signin"))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("This token cannot sign in"));

    let cookie = sign_in(&base, &s.admin).await;
    let (status, page) = get(&base, &cookie, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let (status, page) = get(&base, &cookie, "/matrix").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for name in ["Enrich Order", "Order Sync", "Daily Report"] {
        assert!(page.contains(name), "{name}: {page}");
    }
    // columns are the environments; cells say status, state, hash and since when
    assert!(page.contains("<th scope=\"col\">dev</th>"), "{page}");
    assert!(page.contains("<th scope=\"col\">staging</th>"), "{page}");
    assert!(page.contains("linked"), "{page}");
    assert!(page.contains("state IN_SYNC"), "{page}");
    assert!(page.contains("<time datetime="), "{page}");
    assert!(page.contains("3 workflows match."), "{page}");
    assert!(page.contains("All (3)"), "{page}");
    assert!(page.contains("Drift only (0)"), "{page}");
    assert!(page.contains("admin-1 · acme · admin"), "who: {page}");
    // the content is cached while the read models stand still; the frame is each
    // session's own
    let viewer = sign_in(&base, &s.api.token("acme", "viewer", "v-9")).await;
    let (_, seen) = get(&base, &viewer, "/matrix").await;
    assert!(seen.contains("v-9 · acme · viewer"), "{seen}");
    assert!(!seen.contains("admin-1"), "{seen}");
    assert_ne!(csrf(&seen), csrf(&page));
    let (_, other) = get(
        &base,
        &sign_in(&base, &s.api.token("globex", "admin", "g-1")).await,
        "/matrix",
    )
    .await;
    assert!(
        other.contains("No environment is registered yet"),
        "{other}"
    );
    // a cell links to the workflow's history in its environment
    let report = &s.dev_ids[2];
    let history = format!("/audit/workflow_mapping/dev:{report}");
    assert!(page.contains(&format!("href=\"{history}\"")), "{page}");
    let (status, events) = get(&base, &cookie, &history).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert!(events.contains("workflow_mapping"), "{events}");
    assert!(events.contains("Daily Report"), "{events}");
    // a name search
    let (_, found) = get(&base, &cookie, "/matrix?q=order").await;
    assert!(found.contains("2 workflows match."), "{found}");
    assert!(found.contains("Enrich Order") && found.contains("Order Sync"));
    assert!(!found.contains("Daily Report"), "{found}");
    // drift: a hotfix in dev shows in the count and the filter
    let report = s.dev_ids[2].clone();
    s.dev.modify(&report, |w| {
        w["nodes"][1]["parameters"]["url"] = json!("https://reports.example.com/hotfix");
    });
    let synced = s
        .api
        .ok(
            &s.admin,
            "mutation { syncEnvironment(environmentId: \"dev\") { position } }",
            json!({}),
        )
        .await;
    // the pages read the read model as it stands: wait until it holds the sync
    s.api
        .ok(
            &s.admin,
            "query($p: Int) { workflowMatrix(first: 1, minPosition: $p) { nodes { name } } }",
            json!({ "p": synced["syncEnvironment"]["position"] }),
        )
        .await;
    let (_, drifted) = get(&base, &cookie, "/matrix?drift=1").await;
    assert!(drifted.contains("1 workflow matches."), "{drifted}");
    assert!(drifted.contains("Daily Report") && drifted.contains("state DRIFT"));
    assert!(!drifted.contains("Order Sync"), "{drifted}");
    // one environment's column
    let (_, staging) = get(&base, &cookie, "/matrix?env=staging").await;
    assert!(!staging.contains("<th scope=\"col\">dev</th>"), "{staging}");
    // the environments page
    let (status, envs) = get(&base, &cookie, "/environments").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        envs.contains("staging") && envs.contains("state "),
        "{envs}"
    );

    // sign-out needs the page's CSRF token: without it nothing changes
    let refused = client()
        .post(format!("{base}/signout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    let out = client()
        .post(format!("{base}/signout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf(&page).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    s.api.stop().await;
}

async fn bad_sessions_forms_and_pages_change_nothing(kind: Kind) {
    let s = Setup::new(kind).await;
    settle(&s).await;
    let base = s.api.base.clone();
    // no cookie, a forged one, an expired one: the sign-in page, the cookie cleared
    let (status, page) = get(&base, "", "/matrix").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Sign in to workflowops"));
    let forged = client()
        .get(format!("{base}/matrix"))
        .header(COOKIE, "wfo_session=eyJhbGciOiJIUzI1NiJ9.e30.forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert!(forged.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert!(forged.text().await.unwrap().contains("Your session ended"));
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &workflowops::http::auth::Claims {
            sub: "admin-1".into(),
            tenant: "acme".into(),
            role: "admin".into(),
            iat: now - 3600,
            exp: now - 60,
            ..Default::default()
        },
        &jsonwebtoken::EncodingKey::from_secret(crate::api::SECRET),
    )
    .unwrap();
    let (status, page) = get(&base, &format!("wfo_session={expired}"), "/matrix").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("token expired"), "{page}");

    let cookie = sign_in(&base, &s.admin).await;
    // a huge search, a tampered cursor: a page that says so
    let (status, page) = get(&base, &cookie, &format!("/matrix?q={}", "x".repeat(5000))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Search too long"), "{page}");
    let (status, page) = get(&base, &cookie, "/matrix?after=zz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("malformed cursor"), "{page}");
    // an unknown page, for a browser
    let (status, page) = get(&base, &cookie, "/no-such-page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("No such page"), "{page}");
    let (_, first) = get(&base, &cookie, "/matrix").await;
    assert!(!first.contains("Next page"), "3 rows fit one page: {first}");

    // another tenant sees nothing of acme's
    let globex = s.api.token("globex", "admin", "g-1");
    let cookie = sign_in(&base, &globex).await;
    let (status, page) = get(&base, &cookie, "/matrix").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No environment is registered yet"), "{page}");
    for leak in ["Enrich Order", "Order Sync", "staging"] {
        assert!(!page.contains(leak), "{leak}: {page}");
    }
    let (_, envs) = get(&base, &cookie, "/environments").await;
    assert!(!envs.contains("staging"), "{envs}");
    s.api.stop().await;
}

async fn post_form(
    base: &str,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let response = client()
        .post(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// An incident from detected to closed through the forms: only the transitions the
/// table allows from its status, for the role, are offered; a tampered one is
/// refused in words; a viewer gets no action; another tenant gets nothing.
async fn an_incident_is_walked_through_its_forms(kind: Kind) {
    let s = Setup::new(kind).await;
    let id = s.drift_incident_on_staging().await;
    settle(&s).await;
    let base = s.api.base.clone();
    let detail = format!("/incidents/{id}");
    let action = format!("/incidents/{id}/transition");

    // the list, with its filters
    let admin = sign_in(&base, &s.admin).await;
    let (status, list) = get(&base, &admin, "/incidents?status=detected").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(&format!("href=\"{detail}\"")), "{list}");
    let (_, none) = get(&base, &admin, "/incidents?status=closed").await;
    assert!(none.contains("No incident matches"), "{none}");

    // a viewer sees the incident and no action
    let viewer = sign_in(&base, &s.api.token("acme", "viewer", "v-1")).await;
    let (_, page) = get(&base, &viewer, &detail).await;
    assert!(page.contains("Daily Report"), "{page}");
    // the drift snapshot's per-workflow diff: the hotfixed node
    assert!(
        page.contains("At detection: 2 in sync, 1 drifted, 0 not in Git."),
        "{page}"
    );
    assert!(
        page.contains("Nodes modified: <code>Report</code>"),
        "{page}"
    );
    assert!(!page.contains("Move to"), "{page}");
    assert!(
        page.contains("Your role may not move this incident."),
        "{page}"
    );

    // a developer is offered acknowledging only (closing needs an admin)
    let developer = sign_in(&base, &s.api.token("acme", "developer", "d-1")).await;
    let (_, page) = get(&base, &developer, &detail).await;
    assert!(page.contains("Move to acknowledged"), "{page}");
    assert!(!page.contains("Move to closed"), "{page}");
    assert!(!page.contains("Move to stabilized"), "{page}");
    let token = csrf(&page);
    // a transition not offered (tampered form): refused in words, nothing changes
    let (status, page) = post_form(
        &base,
        &developer,
        &action,
        &[("csrf", token.as_str()), ("to", "stabilized")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(
        page.contains("From detected it can move to: acknowledged, closed."),
        "{page}"
    );
    // without the CSRF token: nothing changes
    let (status, _) = post_form(&base, &developer, &action, &[("to", "acknowledged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, page) = get(&base, &developer, &detail).await;
    assert!(page.contains("<dd>detected</dd>"), "{page}");
    // acknowledged through the form
    let (status, page) = post_form(
        &base,
        &developer,
        &action,
        &[
            ("csrf", token.as_str()),
            ("to", "acknowledged"),
            ("reason", "looking into it"),
            ("ticket_ref", "OPS-7"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let (_, page) = get(&base, &developer, &detail).await;
    assert!(page.contains("<dd>acknowledged</dd>"), "{page}");
    assert!(page.contains("OPS-7"), "{page}");
    assert!(
        page.contains("d-1 (developer)") && page.contains("looking into it"),
        "timeline: {page}"
    );
    // the admin closes it
    let (_, page) = get(&base, &admin, &detail).await;
    assert!(
        page.contains("Move to closed") && page.contains("Move to reconciled"),
        "{page}"
    );
    let token = csrf(&page);
    let (status, page) = post_form(
        &base,
        &admin,
        &action,
        &[
            ("csrf", token.as_str()),
            ("to", "closed"),
            ("reason", "accepted as is"),
            ("resolution_type", "acknowledge"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let (_, page) = get(&base, &admin, &detail).await;
    assert!(page.contains("<dd>closed</dd>"), "{page}");
    assert!(page.contains("Closed: no transition is left."), "{page}");
    assert!(page.contains("admin-1 (admin)"), "{page}");

    // another tenant: no such incident
    let globex = sign_in(&base, &s.api.token("globex", "admin", "g-1")).await;
    let (status, page) = get(&base, &globex, &detail).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!page.contains("Daily Report"), "{page}");
    s.api.stop().await;
}

/// Posts a form; the status, the redirect's target (if any) and the body.
async fn post_location(
    base: &str,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let response = client()
        .post(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().unwrap().to_string());
    (status, location, response.text().await.unwrap())
}

/// The value of the first hidden input named `name` on the page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"));
    let rest = &page[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The promotion pages: compare, create (a double submit creates one), the
/// creator's own approval refused in words, approval by another admin, deploy now,
/// the deployment's progress and snapshots with restore; a viewer gets no action,
/// a form without its CSRF token and an action the state no longer allows change
/// nothing, and a blocking gate is shown with its gates.
async fn a_promotion_is_compared_created_approved_and_deployed(kind: Kind) {
    let s = Setup::new(kind).await;
    settle(&s).await;
    let base = s.api.base.clone();
    let admin = sign_in(&base, &s.admin).await;
    let approver = sign_in(&base, &s.approver).await;
    let viewer = sign_in(&base, &s.api.token("acme", "viewer", "viewer-1")).await;

    // the environments' buttons: developers and up; each says what it did
    let (_, page) = get(&base, &admin, "/environments").await;
    assert_eq!(page.matches(">Sync n8n<").count(), 2, "{page}");
    assert_eq!(
        page.matches(">Check drift<").count(),
        1,
        "staging only: {page}"
    );
    let (_, viewer_page) = get(&base, &viewer, "/environments").await;
    assert!(!viewer_page.contains(">Sync n8n<"), "{viewer_page}");
    let token = csrf(&page);
    let run = |action: &'static str| [("csrf", token.clone()), ("action", action.to_string())];
    let (status, _, done) =
        post_location(&base, &admin, "/environments/dev/run", &pairs(&run("sync"))).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains("Saw 3 workflows: 0 new, 0 changed"), "{done}");
    let (status, _, done) = post_location(
        &base,
        &admin,
        "/environments/dev/run",
        &pairs(&run("sync_repository")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains("Read 3 workflow files at commit"), "{done}");
    let (status, _, done) = post_location(
        &base,
        &admin,
        "/environments/staging/run",
        &pairs(&run("check_drift")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains("0 drifted"), "{done}");
    let (status, _, done) = post_location(
        &base,
        &admin,
        "/environments/dev/run",
        &pairs(&run("check_drift")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{done}");
    assert!(
        done.contains("drift detection runs on non-dev environments"),
        "{done}"
    );
    let (status, _, done) = post_location(
        &base,
        &admin,
        "/environments/dev/run",
        &pairs(&run("reboot")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{done}");
    let (status, _, _) = post_location(
        &base,
        &viewer,
        "/environments/dev/run",
        &[("csrf", "x"), ("action", "sync")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, viewer_page) = get(&base, &viewer, "/environments").await;
    let (status, _, done) = post_location(
        &base,
        &viewer,
        "/environments/dev/run",
        &[("csrf", csrf(&viewer_page).as_str()), ("action", "sync")],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the bus refuses a viewer: {done}"
    );
    settle(&s).await;

    let (status, page) = get(&base, &admin, "/promotions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No promotion matches"), "{page}");

    let (_, page) = get(&base, &admin, "/promotions/new").await;
    assert!(page.contains("value=\"main/dev/staging\""), "{page}");
    assert!(page.contains("Main: dev → staging"), "{page}");

    let (status, page) = get(&base, &admin, "/promotions/new?stage=main%2Fdev%2Fstaging").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for name in ["Enrich Order", "Order Sync", "Daily Report"] {
        assert!(page.contains(name), "{name}: {page}");
    }
    assert_eq!(page.matches("name=\"workflow\"").count(), 3, "{page}");
    let id = hidden(&page, "id");
    let token = csrf(&page);
    let form = [
        ("csrf", token.as_str()),
        ("id", id.as_str()),
        ("pipeline", "main"),
        ("source", "dev"),
        ("target", "staging"),
        ("workflow", "wf-a"),
        ("workflow", "wf-b"),
        ("workflow", "wf-c"),
    ];
    // without the CSRF token: refused, nothing recorded
    let (status, _, page) = post_location(&base, &admin, "/promotions", &form[1..]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    let listed = s
        .api
        .ok(&s.admin, "{ promotions { nodes { id } } }", json!({}))
        .await;
    assert_eq!(listed["promotions"]["nodes"], json!([]), "{listed}");

    let (status, location, _) = post_location(&base, &admin, "/promotions", &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some(format!("/promotions/{id}").as_str())
    );
    // a double submit lands on the same promotion
    let (status, again, _) = post_location(&base, &admin, "/promotions", &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(again, location);
    let listed = s
        .api
        .ok(
            &s.admin,
            "{ promotions { nodes { id status } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["promotions"]["nodes"],
        json!([{ "id": id, "status": "PENDING_APPROVAL" }])
    );

    let path = format!("/promotions/{id}");
    let (_, page) = get(&base, &admin, &path).await;
    assert!(page.contains("pending_approval"), "{page}");
    assert!(
        page.contains("target_environment_healthy"),
        "gates shown: {page}"
    );
    assert!(
        page.contains(">Approve<") && page.contains(">Reject<"),
        "{page}"
    );
    assert!(
        !page.contains("Deploy now"),
        "not offered before approval: {page}"
    );
    // a viewer sees it without actions
    let (_, page) = get(&base, &viewer, &path).await;
    assert!(page.contains("pending_approval"), "{page}");
    assert!(!page.contains("/action\""), "{page}");
    assert!(page.contains("need the admin role"), "{page}");

    // the creator may not approve their own promotion: refused in words
    let action = format!("{path}/action");
    let (_, page) = get(&base, &admin, &path).await;
    let (status, _, page) = post_location(
        &base,
        &admin,
        &action,
        &[("csrf", csrf(&page).as_str()), ("to", "approve")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("Refused"), "{page}");
    assert!(page.contains("pending_approval"), "unchanged: {page}");

    let (_, page) = get(&base, &approver, &path).await;
    let (status, location, page) = post_location(
        &base,
        &approver,
        &action,
        &[("csrf", csrf(&page).as_str()), ("to", "approve")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert_eq!(location.as_deref(), Some(path.as_str()));
    let (_, page) = get(&base, &admin, &path).await;
    assert!(page.contains("approved by admin-2"), "{page}");
    assert!(
        page.contains("Deploy now") && page.contains("Schedule"),
        "{page}"
    );

    // a bad time is refused in words
    let (status, _, page) = post_location(
        &base,
        &admin,
        &action,
        &[
            ("csrf", csrf(&page).as_str()),
            ("to", "deploy"),
            ("scheduled_for", "tomorrow"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("is not a time"), "{page}");

    // scheduled for later: shown on the environments page, then cancelled
    let later = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let (status, location, page) = post_location(
        &base,
        &admin,
        &action,
        &[
            ("csrf", csrf(&page).as_str()),
            ("to", "deploy"),
            ("scheduled_for", later.as_str()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let scheduled_path = location.unwrap();
    let (_, page) = get(&base, &admin, &scheduled_path).await;
    assert!(page.contains(">scheduled<"), "{page}");
    assert!(page.contains(">Cancel deployment<"), "{page}");
    let scheduled = scheduled_path.trim_start_matches("/deployments/");
    let (_, environments) = get(&base, &admin, "/environments").await;
    assert!(
        environments.contains(&format!(
            "scheduled: <a href=\"{scheduled_path}\">{scheduled}</a>"
        )),
        "{environments}"
    );
    let (status, location, page) = post_location(
        &base,
        &admin,
        &format!("{scheduled_path}/cancel"),
        &[("csrf", csrf(&page).as_str()), ("reason", "not tomorrow")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert_eq!(location.as_deref(), Some(scheduled_path.as_str()));
    let (_, page) = get(&base, &admin, &scheduled_path).await;
    assert!(
        page.contains(">cancelled<") && page.contains("not tomorrow"),
        "{page}"
    );
    assert!(!page.contains(">Cancel deployment<"), "{page}");

    let (_, page) = get(&base, &admin, &path).await;
    let (status, location, page) = post_location(
        &base,
        &admin,
        &action,
        &[("csrf", csrf(&page).as_str()), ("to", "deploy")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let deployment_path = location.unwrap();
    assert_ne!(deployment_path, scheduled_path);
    let deployment = deployment_path
        .trim_start_matches("/deployments/")
        .to_string();
    assert_eq!(
        crate::deployments::ended(&s.api, &s.admin, &deployment).await["status"],
        "SUCCESS"
    );
    settle(&s).await;
    let (status, page) = get(&base, &admin, &deployment_path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let head = s.api.store.store.last_position().await.unwrap();
    let (status, fragment) = get(
        &base,
        &admin,
        &format!("{deployment_path}/progress?min={head}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(fragment.contains("data-done=\"true\""), "{fragment}");
    assert!(fragment.contains(">success<"), "{fragment}");
    assert!(fragment.contains("3 of 3"), "{fragment}");
    for name in ["Enrich Order", "Order Sync", "Daily Report"] {
        assert!(fragment.contains(name), "{name}: {fragment}");
    }
    assert!(!fragment.contains("<html"), "a fragment, not a page");

    // the same action again: the state no longer allows it, refused in words
    let (_, page) = get(&base, &admin, &path).await;
    assert!(page.contains("completed"), "{page}");
    let (status, _, page) = post_location(
        &base,
        &admin,
        &action,
        &[("csrf", csrf(&page).as_str()), ("to", "deploy")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(page.contains("it can move to: nothing"), "{page}");

    // snapshots: before and after, each with restore for an admin only
    let (_, page) = get(&base, &admin, "/environments/staging/snapshots").await;
    assert_eq!(
        page.matches("aria-label=\"Restore snapshot").count(),
        2,
        "{page}"
    );
    assert!(page.contains(">pre<") && page.contains(">post<"), "{page}");
    let (_, page) = get(&base, &viewer, "/environments/staging/snapshots").await;
    assert!(!page.contains("aria-label=\"Restore snapshot"), "{page}");
    assert!(page.contains("admin only"), "{page}");
    let (status, _) = get(&base, &admin, "/environments/nope/snapshots").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&base, &admin, "/deployments/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // another tenant sees none of it and cannot act on it
    let other = sign_in(&base, &s.api.token("globex", "admin", "g-1")).await;
    let (_, page) = get(&base, &other, "/promotions").await;
    assert!(page.contains("No promotion matches"), "{page}");
    for path in [
        path.as_str(),
        deployment_path.as_str(),
        "/environments/staging/snapshots",
    ] {
        let (status, page) = get(&base, &other, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {page}");
    }
    let (status, _, page) = post_location(
        &base,
        &other,
        &action,
        &[("csrf", csrf(&page).as_str()), ("to", "cancel")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    let (_, snapshots) = get(&base, &admin, "/environments/staging/snapshots").await;
    let restore = snapshots
        .split("action=\"")
        .find(|a| a.starts_with("/environments/staging/snapshots/"))
        .map(|a| a[..a.find('"').unwrap()].to_string())
        .unwrap();
    let (status, _, page) = post_location(
        &base,
        &other,
        &restore,
        &[("csrf", csrf(&page).as_str()), ("id", "r-1")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    let listed = s
        .api
        .ok(&s.admin, "{ promotions { nodes { status } } }", json!({}))
        .await;
    assert_eq!(
        listed["promotions"]["nodes"],
        json!([{ "status": "COMPLETED" }])
    );

    // a blocking gate: the target deactivated
    s.api
        .ok(
            &s.admin,
            "mutation { deactivateEnvironment(id: \"staging\") { position } }",
            json!({}),
        )
        .await;
    settle(&s).await;
    let (_, page) = get(&base, &admin, "/promotions/new?stage=main%2Fdev%2Fstaging").await;
    let blocked = [
        ("csrf", csrf(&page)),
        ("id", "blocked-1".to_string()),
        ("pipeline", "main".into()),
        ("source", "dev".into()),
        ("target", "staging".into()),
        ("workflow", "wf-a".into()),
        ("bypass", "0".into()),
    ];
    let blocked: Vec<(&str, &str)> = blocked.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, page) = post_location(&base, &admin, "/promotions", &blocked).await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(page.contains("GATE_BLOCKED"), "{page}");
    assert!(page.contains("target_environment_healthy"), "{page}");
}

/// `workflowops token --signin-url`'s ticket opens one session, once; a used,
/// forged or plain token as ticket is refused, and a ticket is no bearer token.
async fn a_sign_in_link_opens_one_session(kind: Kind) {
    let s = Setup::new(kind).await;
    settle(&s).await;
    let base = s.api.base.clone();
    let ticket = s
        .api
        .auth
        .mint_ticket(
            "acme",
            "developer",
            "dev-1",
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let link = format!("{base}/signin?ticket={ticket}");
    let response = client().get(&link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(set.contains("Max-Age=3600"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = response.text().await.unwrap();
    assert!(
        page.contains("Signed in as dev-1 (developer) of acme"),
        "{page}"
    );
    let (status, page) = get(&base, &cookie, "/matrix").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("dev-1"), "{page}");

    // once only
    let response = client().get(&link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(SET_COOKIE).is_none());
    assert!(response.text().await.unwrap().contains("already used"));
    // a bearer token is not a ticket, and a ticket is not a bearer token
    let response = client()
        .get(format!("{base}/signin?ticket={}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("not a sign-in ticket"));
    let other = s
        .api
        .auth
        .mint_ticket(
            "acme",
            "admin",
            "admin-9",
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let (status, _) = s
        .api
        .post(Some(&other), json!({ "query": "{ environments { id } }" }))
        .await;
    assert_eq!(status, 401);
    let response = client()
        .post(format!("{base}/signin"))
        .form(&[("token", other.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("not a bearer token"));
}

fn pairs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A deployment that failed and was rolled back: its page explains the rollback and
/// the recovery options; the environments page shows the pin and an admin unpins it
/// there (a developer is not offered it, and the bus refuses it anyway).
async fn a_rolled_back_deployment_shows_its_recovery_and_unpins(kind: Kind) {
    let s = Setup::new(kind).await;
    s.approved("p1").await;
    assert_eq!(s.deploy_now("p1").await["status"], "SUCCESS");
    s.change_in_dev(1, "https://slack.example.com/v2").await;
    s.approved("p2").await;
    s.refuse_next_update("Order Sync");
    let deployment = s.deploy_now("p2").await;
    assert_eq!(deployment["status"], "FAILED", "{deployment}");
    let id = deployment["id"].as_str().unwrap().to_string();
    settle(&s).await;
    let base = s.api.base.clone();
    let admin = sign_in(&base, &s.admin).await;
    let developer = sign_in(&base, &s.api.token("acme", "developer", "d-1")).await;

    let (status, page) = get(&base, &admin, &format!("/deployments/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(">failed<"), "{page}");
    assert!(
        page.contains("must have required property"),
        "n8n's message: {page}"
    );
    assert!(
        page.contains("The target holds exactly what it held before."),
        "{page}"
    );
    assert!(page.contains("id=\"recovery\""), "{page}");
    assert!(
        page.contains("create a new promotion of the same workflows"),
        "{page}"
    );
    assert!(page.contains("until unpinEnvironment"), "{page}");
    assert!(
        !page.contains("data-live=\"true\""),
        "a finished deployment is not followed: {page}"
    );

    let (_, page) = get(&base, &admin, "/environments").await;
    assert!(page.contains("pinned: "), "{page}");
    assert!(page.contains(">Unpin<"), "{page}");
    let (_, dev_page) = get(&base, &developer, "/environments").await;
    assert!(
        dev_page.contains(">Sync n8n<") && !dev_page.contains(">Unpin<"),
        "{dev_page}"
    );
    // a developer's forged unpin is refused by the bus
    let (status, _, refused) = post_location(
        &base,
        &developer,
        "/environments/staging/run",
        &[
            ("csrf", csrf(&dev_page).as_str()),
            ("action", "unpin"),
            ("reason", "x"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, _, done) = post_location(
        &base,
        &admin,
        "/environments/staging/run",
        &[
            ("csrf", csrf(&page).as_str()),
            ("action", "unpin"),
            ("reason", "looked at it"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains("Unpinned"), "{done}");
    let (_, page) = get(&base, &admin, "/environments").await;
    assert!(
        !page.contains("pinned: ") && !page.contains(">Unpin<"),
        "{page}"
    );
    let pinned = s
        .api
        .ok(
            &s.admin,
            "{ environment(id: \"staging\") { pinned } }",
            json!({}),
        )
        .await;
    assert_eq!(pinned["environment"]["pinned"], json!(null), "{pinned}");
}
