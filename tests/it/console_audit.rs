//! The console's audit pages over HTTP (issue 16 point 6): the audit trail with its
//! filters and pages, an aggregate's history and its state as of a position, the
//! log verification, the live feed and `GET /events` with the session cookie, a
//! second tenant that sees none of it, and bad input.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::api::{register_environment, Api};
use crate::deployments::Setup;
use crate::support::{both_backends, Kind};

both_backends!(
    the_trail_filters_pages_and_links_each_aggregates_history,
    verification_the_live_page_and_the_cookie_stream,
    another_tenant_sees_none_of_it,
    bad_input_gets_a_clear_page,
);

/// Waits until the audit read model holds every event so far.
async fn settle(api: &Api, token: &str) {
    let head = api.store.store.last_position().await.unwrap();
    api.ok(
        token,
        "query($p: Int) { auditTrail(first: 1, minPosition: $p) { nodes { position } } }",
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

/// The positions in the first column of the page's table rows, top to bottom.
fn positions(page: &str) -> Vec<i64> {
    page.split("<th scope=\"row\">")
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].trim().parse().unwrap())
        .collect()
}

/// The text between `start` and `end` (both must be there).
fn between<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let from = page
        .find(start)
        .unwrap_or_else(|| panic!("{start}: {page}"));
    let rest = &page[from..];
    &rest[..rest.find(end).unwrap_or_else(|| panic!("{end}: {page}"))]
}

/// The value of `attribute="…"` in the page (HTML entities of `&` undone).
fn attribute(page: &str, attribute: &str) -> String {
    let key = format!("{attribute}=\"");
    let at = page
        .find(&key)
        .unwrap_or_else(|| panic!("{attribute}: {page}"));
    let rest = &page[at + key.len()..];
    rest[..rest.find('"').unwrap()].replace("&amp;", "&")
}

/// The `href` of the page's `rel="next"` link.
fn next_link(page: &str) -> String {
    let link = &page[..page.find("rel=\"next\"").expect("a next page link")];
    let href = &link[link.rfind("href=\"").unwrap() + "href=\"".len()..];
    href[..href.find('"').unwrap()].replace("&amp;", "&")
}

/// The positions the API's `auditTrail` lists for these arguments, in its order.
async fn api_positions(api: &Api, token: &str, args: &str) -> Vec<i64> {
    let query = format!("{{ auditTrail({args} first: 200) {{ nodes {{ position }} }} }}");
    let data = api.ok(token, &query, json!({})).await;
    data["auditTrail"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["position"].as_i64().unwrap())
        .collect()
}

/// `GET /events` with a cookie and no Authorization header.
async fn open_stream(base: &str, cookie: &str, path: &str) -> reqwest::Response {
    let mut request = client().get(format!("{base}{path}"));
    if !cookie.is_empty() {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

/// Reads Server-Sent Events off a response.
struct Events {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Events {
        assert_eq!(response.status(), StatusCode::OK);
        let kind = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Events {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|b| b.to_vec())),
            ),
            buffer: String::new(),
        }
    }

    /// The next event's data, within `within`; `None` if none came.
    async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return Some(serde_json::from_str(&data).unwrap());
                }
                continue; // a keep-alive comment
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await;
            match chunk {
                Err(_) => return None,
                Ok(chunk) => {
                    let chunk = chunk.expect("the stream stays open").unwrap();
                    self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
                }
            }
        }
    }

    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("the stream delivers an event")
    }
}

/// The trail filtered by aggregate and by actor, in the API's order and pages; each
/// aggregate's history page with its state before and after a transition.
async fn the_trail_filters_pages_and_links_each_aggregates_history(kind: Kind) {
    let s = Setup::new(kind).await;
    let id = s.drift_incident_on_staging().await;
    let developer = s.api.token("acme", "developer", "d-1");
    let acknowledged = s
        .api
        .ok(
            &developer,
            "mutation($id: ID!) { acknowledgeIncident(id: $id, reason: \"looking into it\") { position } }",
            json!({ "id": id }),
        )
        .await["acknowledgeIncident"]["position"]
        .as_i64()
        .unwrap();
    s.api
        .ok(
            &s.admin,
            "mutation($id: ID!) { stabilizeIncident(id: $id, reason: \"hotfix in Git\") { position } }",
            json!({ "id": id }),
        )
        .await;
    // more than a page of 50 in all
    for i in 0..5 {
        register_environment(&s.api, &s.admin, &format!("extra-{i}"), "DEV").await;
    }
    settle(&s.api, &s.admin).await;
    let base = s.api.base.clone();
    let cookie = sign_in(&base, &s.admin).await;

    // one aggregate: exactly its events, in the API's (log) order
    let (status, page) = get(
        &base,
        &cookie,
        &format!("/audit?aggregate_type=incident&aggregate_id={id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let expected = api_positions(
        &s.api,
        &s.admin,
        &format!("aggregateType: \"incident\", aggregateId: \"{id}\","),
    )
    .await;
    assert_eq!(expected.len(), 3, "detected, acknowledged, stabilized");
    assert_eq!(positions(&page), expected, "{page}");
    let link = format!("href=\"/audit/incident/{id}\"");
    assert_eq!(page.matches(&link).count(), 3, "{page}");
    assert!(!page.contains("href=\"/audit/environment/"), "{page}");
    let detected_at = page.find("incident.detected").expect("detected");
    let acknowledged_at = page.find("incident.acknowledged").expect("acknowledged");
    let stabilized_at = page.find("incident.stabilized").expect("stabilized");
    assert!(detected_at < acknowledged_at && acknowledged_at < stabilized_at);
    assert!(page.contains("detected → acknowledged"), "{page}");
    assert!(page.contains("acknowledged → stabilized"), "{page}");
    assert!(page.contains("d-1 (developer)") && page.contains("looking into it"));
    assert!(page.contains("admin-1 (admin)") && page.contains("hotfix in Git"));
    assert!(page.contains("<time datetime="), "{page}");
    // the form shows the filters back
    assert!(
        page.contains(&format!(
            "name=\"aggregate_id\" maxlength=\"256\" value=\"{id}\""
        )),
        "{page}"
    );
    assert!(
        page.contains("<option value=\"incident\" selected>incident</option>"),
        "{page}"
    );

    // one actor: only that actor's
    let (status, page) = get(&base, &cookie, "/audit?actor=d-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(positions(&page), vec![acknowledged], "{page}");
    assert!(page.contains("d-1 (developer)"), "{page}");
    assert!(!page.contains("admin-1 (admin)"), "{page}");
    assert!(!page.contains("incident.detected"), "{page}");

    // everything, in pages of 50 following the API's order
    let all = api_positions(&s.api, &s.admin, "").await;
    assert!(
        all.len() > 50,
        "the setup makes more than a page: {}",
        all.len()
    );
    let (_, first) = get(&base, &cookie, "/audit").await;
    assert!(first.contains("href=\"/audit/verify\""), "{first}");
    assert_eq!(positions(&first), all[..50].to_vec());
    assert!(!first.contains("First page"), "{first}");
    let next = next_link(&first);
    assert!(next.starts_with("/audit?after="), "{next}");
    let (status, second) = get(&base, &cookie, &next).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let rest: Vec<i64> = all[50..].iter().copied().take(50).collect();
    assert_eq!(positions(&second), rest);
    assert!(second.contains("← First page"), "{second}");
    // a time range around everything, and one after it
    let (_, ranged) = get(
        &base,
        &cookie,
        "/audit?aggregate_type=incident&from=2000-01-01T00%3A00&to=2100-01-01T00%3A00%3A00Z",
    )
    .await;
    assert_eq!(positions(&ranged), expected, "{ranged}");
    assert!(ranged.contains("value=\"2000-01-01T00:00:00\""), "{ranged}");
    let (status, later) = get(&base, &cookie, "/audit?from=2100-01-01T00%3A00").await;
    assert_eq!(status, StatusCode::OK);
    assert!(later.contains("No event matches these filters."), "{later}");
    assert!(positions(&later).is_empty());

    // the incident's history, and its state as of a position
    let (status, history) = get(&base, &cookie, &format!("/audit/incident/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert!(history.contains("3 events"), "{history}");
    let events = between(&history, "<h2>Events</h2>", "</table>");
    assert_eq!(positions(events), expected, "{history}");
    for event in [
        "incident.detected",
        "incident.acknowledged",
        "incident.stabilized",
    ] {
        assert!(events.contains(event), "{event}: {history}");
    }
    assert!(
        events.contains("<details><summary>payload</summary>"),
        "{history}"
    );
    assert!(events.contains("d-1 (developer)"), "{history}");
    assert!(history.contains("<label>State as of position"), "{history}");
    let latest = between(&history, "<h2>State</h2>", "<h2>Events</h2>");
    assert!(
        latest.contains("&quot;status&quot;: &quot;stabilized&quot;"),
        "{latest}"
    );

    let detected = expected[0];
    let (status, before) = get(
        &base,
        &cookie,
        &format!("/audit/incident/{id}?at={detected}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let state = between(&before, "<h2>State</h2>", "<h2>Events</h2>");
    assert!(
        state.contains(&format!("As of position {detected}")),
        "{state}"
    );
    assert!(
        state.contains("&quot;status&quot;: &quot;detected&quot;"),
        "{state}"
    );
    assert!(!state.contains("looking into it"), "{state}");
    let (_, after) = get(
        &base,
        &cookie,
        &format!("/audit/incident/{id}?at={acknowledged}"),
    )
    .await;
    let state = between(&after, "<h2>State</h2>", "<h2>Events</h2>");
    assert!(
        state.contains("&quot;status&quot;: &quot;acknowledged&quot;"),
        "{state}"
    );
    assert!(state.contains("looking into it"), "{state}");
    // the same state the API's aggregateAt replays
    let api_state = s
        .api
        .ok(
            &s.admin,
            "query($id: ID!, $p: Int) { aggregateAt(aggregateType: \"incident\", aggregateId: $id, position: $p) { state } }",
            json!({ "id": id, "p": acknowledged }),
        )
        .await;
    let pretty = serde_json::to_string_pretty(&api_state["aggregateAt"]["state"])
        .unwrap()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    assert!(state.contains(&pretty), "{pretty}\n---\n{state}");
    // before it existed
    let (status, none) = get(&base, &cookie, &format!("/audit/incident/{id}?at=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        none.contains(&format!(
            "It did not exist yet at position 1: its first event is at position {detected}."
        )),
        "{none}"
    );
    s.api.stop().await;
}

/// `/audit/verify` says OK with the report's figures; `/live` renders the newest
/// events and the stream to follow; `/events` answers the session cookie alone.
async fn verification_the_live_page_and_the_cookie_stream(kind: Kind) {
    let s = Setup::new(kind).await;
    settle(&s.api, &s.admin).await;
    let base = s.api.base.clone();
    let cookie = sign_in(&base, &s.api.token("acme", "viewer", "v-1")).await;

    let (status, page) = get(&base, &cookie, "/audit/verify").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let report = s
        .api
        .ok(
            &s.admin,
            "{ verifyEventLog { ok checkedEvents firstBrokenPosition } }",
            json!({}),
        )
        .await;
    assert_eq!(report["verifyEventLog"]["ok"], true);
    let checked = report["verifyEventLog"]["checkedEvents"].as_i64().unwrap();
    assert!(checked > 0);
    assert!(
        page.contains(&format!(
            "The log is intact: every chain checks out over {checked} events."
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!("<dt>Events checked</dt><dd>{checked}</dd>")),
        "{page}"
    );
    assert!(
        page.contains("<dt>First broken position</dt><dd>none</dd>"),
        "{page}"
    );
    assert!(page.contains("<dt>Result</dt><dd>OK</dd>"), "{page}");

    // the live page: the newest events first, and the stream after the newest
    let all = api_positions(&s.api, &s.admin, "").await;
    let (status, live) = get(&base, &cookie, "/live").await;
    assert_eq!(status, StatusCode::OK, "{live}");
    let shown = positions(&live);
    assert_eq!(shown.len(), all.len().min(50), "{live}");
    assert!(shown.len() > 10, "{live}");
    let mut newest: Vec<i64> = all.iter().rev().take(50).copied().collect();
    assert_eq!(shown, newest, "newest first: {live}");
    assert!(
        live.contains("id=\"live-status\" aria-live=\"polite\""),
        "{live}"
    );
    assert!(live.contains("new EventSource("), "{live}");
    assert!(live.contains("href=\"/live\">Reload</a>"), "{live}");
    let stream = attribute(&live, "data-stream");
    assert_eq!(stream, format!("/events?from={}", newest[0]));
    // filtered by aggregate type, the stream too
    let (_, environments) = get(&base, &cookie, "/live?aggregate_type=environment").await;
    let env_positions = api_positions(&s.api, &s.admin, "aggregateType: \"environment\",").await;
    newest = env_positions.iter().rev().take(50).copied().collect();
    assert_eq!(positions(&environments), newest, "{environments}");
    assert!(!environments.contains("href=\"/audit/incident/"));
    assert_eq!(
        attribute(&environments, "data-stream"),
        format!("/events?from={}&aggregateTypes=environment", newest[0])
    );

    // the stream with the session cookie only: it delivers what happens next
    let mut events = Events::new(open_stream(&base, &cookie, &stream).await);
    register_environment(&s.api, &s.admin, "qa", "DEV").await;
    let first = events.next().await;
    assert!(first["position"].as_i64().unwrap() > all[all.len() - 1]);
    assert_eq!(first["metadata"]["tenant_id"], "acme", "{first}");
    assert_eq!(first["aggregateType"], "environment", "{first}");
    assert_eq!(first["aggregateId"], "qa", "{first}");
    // without a cookie (and no token), or with a forged one: refused
    let refused = open_stream(&base, "", "/events?from=0").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let forged = open_stream(&base, "wfo_session=forged", "/events?from=0").await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    s.api.stop().await;
}

/// A second tenant's pages and stream show nothing of the first tenant's.
async fn another_tenant_sees_none_of_it(kind: Kind) {
    let s = Setup::new(kind).await;
    let id = s.drift_incident_on_staging().await;
    settle(&s.api, &s.admin).await;
    let base = s.api.base.clone();
    let globex = s.api.token("globex", "admin", "g-1");
    let cookie = sign_in(&base, &globex).await;

    let (status, page) = get(&base, &cookie, "/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No event is recorded yet."), "{page}");
    assert!(positions(&page).is_empty(), "{page}");
    let (_, page) = get(
        &base,
        &cookie,
        &format!("/audit?aggregate_type=incident&aggregate_id={id}"),
    )
    .await;
    assert!(page.contains("No event matches these filters."), "{page}");
    assert!(!page.contains("incident.detected"), "{page}");
    let (status, page) = get(&base, &cookie, &format!("/audit/incident/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("No such aggregate"), "{page}");
    assert!(!page.contains("incident.detected"), "{page}");
    let (status, page) = get(&base, &cookie, "/audit/environment/staging").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    let (_, page) = get(&base, &cookie, "/live").await;
    assert!(positions(&page).is_empty(), "{page}");
    assert!(page.contains("No event yet."), "{page}");
    let (_, page) = get(&base, &cookie, "/audit/verify").await;
    assert!(
        page.contains("The log is intact: every chain checks out over 0 events."),
        "{page}"
    );

    // globex's stream from the start: acme's events, old and new, never come
    let mut events = Events::new(open_stream(&base, &cookie, "/events?from=0").await);
    assert!(
        events
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "globex has no event yet"
    );
    s.api
        .ok(
            &s.admin,
            "mutation($id: ID!) { acknowledgeIncident(id: $id) { position } }",
            json!({ "id": id }),
        )
        .await;
    register_environment(&s.api, &globex, "g-env", "DEV").await;
    let first = events.next().await;
    assert_eq!(first["metadata"]["tenant_id"], "globex", "{first}");
    assert_eq!(first["aggregateId"], "g-env", "{first}");
    // and acme's pages do not show globex's
    let acme = sign_in(&base, &s.admin).await;
    settle(&s.api, &s.admin).await;
    let (_, page) = get(&base, &acme, "/audit?aggregate_type=environment").await;
    assert!(
        page.contains("staging") && !page.contains("g-env"),
        "{page}"
    );
    s.api.stop().await;
}

/// Too long, malformed or unknown input: a page that says what is wrong, with the
/// right status; no session: the sign-in page.
async fn bad_input_gets_a_clear_page(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token("acme", "admin", "admin-1");
    register_environment(&api, &admin, "prod", "PRODUCTION").await;
    settle(&api, &admin).await;
    let base = api.base.clone();

    for path in [
        "/audit",
        "/audit/verify",
        "/live",
        "/audit/environment/prod",
    ] {
        let (status, page) = get(&base, "", path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(page.contains("Sign in to workflowops"), "{path}: {page}");
    }
    let cookie = sign_in(&base, &admin).await;
    let (status, page) = get(&base, &cookie, "/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<td>environment.registered</td>"), "{page}");
    assert_eq!(positions(&page).len(), 1, "{page}");

    let cases: Vec<(String, &str)> = vec![
        (
            format!("/audit?aggregate_id={}", "x".repeat(5000)),
            "The aggregate id is too long: at most 256 characters.",
        ),
        (
            format!("/audit?actor={}", "y".repeat(300)),
            "The actor is too long",
        ),
        ("/audit?from=yesterday".into(), "is not a time for"),
        ("/audit?to=2024-13-45T99%3A00".into(), "is not a time for"),
        (
            "/audit?from=2024-01-02T00%3A00&to=2024-01-01T00%3A00".into(),
            "The end of the time range must be after its start.",
        ),
        ("/audit?after=zz".into(), "malformed cursor"),
        (
            format!("/audit?after={}", "ab".repeat(300)),
            "The page cursor is too long",
        ),
        (
            "/audit?aggregate_type=nope".into(),
            "is not an aggregate type",
        ),
        (
            "/live?aggregate_type=nope".into(),
            "is not an aggregate type",
        ),
        (
            "/audit/environment/prod?at=abc".into(),
            "is not a position in the log",
        ),
        (
            "/audit/environment/prod?at=-3".into(),
            "is not a position in the log",
        ),
    ];
    for (path, message) in &cases {
        let (status, page) = get(&base, &cookie, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {page}");
        assert!(page.contains(message), "{path}: {message}: {page}");
        assert!(page.contains("role=\"alert\""), "{path}: {page}");
        assert!(!page.contains(&"x".repeat(300)), "not echoed whole: {path}");
    }
    // the filter form stays, so the input can be fixed
    let (_, page) = get(&base, &cookie, "/audit?from=yesterday&actor=admin-1").await;
    assert!(page.contains("value=\"admin-1\""), "{page}");
    assert!(positions(&page).is_empty(), "{page}");

    for path in [
        "/audit/environment/nope".to_string(),
        "/audit/bogus/prod".to_string(),
        format!("/audit/environment/{}", "z".repeat(5000)),
    ] {
        let (status, page) = get(&base, &cookie, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {page}");
        assert!(page.contains("No such aggregate"), "{path}: {page}");
    }
    // a position past the last event is the latest state; a known one, its state
    let (status, page) = get(&base, &cookie, "/audit/environment/prod?at=999999").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("As of position 999999"), "{page}");
    assert!(page.contains("&quot;class&quot;"), "{page}");
    api.stop().await;
}

/// In headless Chromium: the live page follows the stream (status "live", a new
/// event prepended without a reload), and axe-core finds no serious violation on
/// the audit pages. (SQLite only, like the other browser tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_follows_new_events_in_a_browser() {
    use crate::browser::Browser;

    let s = Setup::new(Kind::Sqlite).await;
    settle(&s.api, &s.admin).await;
    let b = Browser::start("the_live_page_follows_new_events_in_a_browser", &s.api.base).await;
    b.sign_in(&s.admin).await;
    b.goto("/live").await;
    b.wait_title("Live events").await;
    b.wait_for(fantoccini::Locator::XPath(
        "//p[@id='live-status'][normalize-space(.)='live']",
    ))
    .await;
    let before = b.all("#live-rows tr").await.len();
    assert!(before > 0);
    b.axe("/live").await;

    // an event recorded now appears at the top, without a reload
    let position = register_environment(&s.api, &s.admin, "qa", "DEV").await;
    let row = b.wait_css(&format!("#live-rows tr#ev-{position}")).await;
    let text = row.text().await.unwrap();
    assert!(text.contains("environment qa"), "{text}");
    assert!(text.contains("environment.registered"), "{text}");
    let first = b.all("#live-rows tr").await[0].attr("id").await.unwrap();
    assert_eq!(first.as_deref(), Some(format!("ev-{position}").as_str()));
    assert_eq!(b.all("#live-rows tr").await.len(), before + 1);
    // its link opens the environment's history
    b.click(&format!("#live-rows tr#ev-{position} a")).await;
    b.wait_title("environment qa").await;
    b.axe("/audit/environment/qa").await;
    b.goto("/audit").await;
    b.wait_title("Audit trail").await;
    b.axe("/audit").await;
    b.click("a[href='/audit/verify']").await;
    b.wait_title("Event log verification").await;
    b.wait_text("The log is intact").await;
    b.axe("/audit/verify").await;
    b.screenshot().await;
    b.close().await;
    s.api.stop().await;
}
