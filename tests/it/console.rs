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
