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
);

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
    s.api
        .ok(
            &s.admin,
            "mutation { syncEnvironment(environmentId: \"dev\") { position } }",
            json!({}),
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
