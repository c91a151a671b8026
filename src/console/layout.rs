//! The console's page frame, stylesheet and small shared pieces.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::Session;

/// The stylesheet, served at `/console.css` (cached; its URL carries its hash).
const CSS: &str = r#"
:root { --fg: #1b1f24; --muted: #4d5560; --line: #c9ced6; --bg: #fff; --accent: #0b57d0;
  --ok: #116329; --ok-bg: #dafbe1; --warn: #7d4e00; --warn-bg: #fff1c5; --bad: #a40e26; --bad-bg: #ffebe9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus, textarea:focus { outline: 3px solid #f5a623; outline-offset: 1px; }
header.top { display: flex; flex-wrap: wrap; gap: .75rem 1.5rem; align-items: center; padding: .6rem 1rem; border-bottom: 1px solid var(--line); }
header.top nav { display: flex; flex-wrap: wrap; gap: .25rem 1rem; }
header.top .who { margin-left: auto; color: var(--muted); }
main { padding: 1rem; max-width: 1400px; }
h1 { font-size: 1.4rem; margin: .2rem 0 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f5f8; }
.scroll { overflow-x: auto; }
.state { display: inline-block; padding: 0 .35rem; border-radius: 3px; font-weight: 600; font-size: .85rem; }
.IN_SYNC { color: var(--ok); background: var(--ok-bg); }
.DRIFT, .ERROR, .DRIFT_DETECTED, .DRIFT_INCIDENT_ACTIVE { color: var(--bad); background: var(--bad-bg); }
.OUT_OF_DATE, .UNTRACKED, .DRIFT_INCIDENT_ACKNOWLEDGED, .NEW, .UNKNOWN { color: var(--warn); background: var(--warn-bg); }
.hash { font-family: ui-monospace, monospace; font-size: .85rem; color: var(--muted); }
.muted, .hint { color: var(--muted); }
.error { color: var(--bad); background: var(--bad-bg); padding: .5rem; border-radius: 3px; }
form.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin-bottom: 1rem; }
form.filters label { display: flex; flex-direction: column; font-size: .9rem; }
input, select, textarea, button { font: inherit; }
button { padding: .3rem .8rem; }
section.signin { max-width: 36rem; }
section.signin textarea { width: 100%; }
.empty { padding: 1rem; border: 1px dashed var(--line); }
form.inline { display: inline-block; margin: 0 .25rem .25rem 0; }
.actions { margin-bottom: .25rem; }
.SUCCESS, .COMPLETED, .APPROVED { color: var(--ok); background: var(--ok-bg); }
.FAILED, .ROLLED_BACK, .REJECTED { color: var(--bad); background: var(--bad-bg); }
.PENDING, .PENDING_APPROVAL, .SCHEDULED, .RUNNING, .CHANGED { color: var(--warn); background: var(--warn-bg); }
@media (max-width: 700px) { main { padding: .5rem; } th, td { padding: .25rem; } }
"#;

/// `/console.css?v=<hash>` (a new stylesheet gets a new URL).
fn css_url() -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(CSS.as_bytes()));
    format!("/console.css?v={}", &hash[..12])
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}

/// A whole page: the frame (navigation, who is signed in, sign-out) around `body`.
pub fn page(session: Option<&Session>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · workflowops" }
                link rel="stylesheet" href=(css_url());
            }
            body {
                header.top {
                    strong { "workflowops" }
                    @if let Some(session) = session {
                        nav aria-label="Main" {
                            a href="/matrix" { "Matrix" }
                            a href="/environments" { "Environments" }
                            a href="/incidents" { "Incidents" }
                            a href="/promotions" { "Promotions" }
                            a href="/audit" { "Audit" }
                            a href="/live" { "Live events" }
                        }
                        span.who {
                            (session.principal.subject) " · " (session.principal.tenant.as_str())
                            " · " (format!("{:?}", session.principal.role).to_lowercase())
                        }
                        form method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
                // times in the browser's zone; UTC stays on hover (the title)
                script { (PreEscaped(LOCAL_TIMES)) }
            }
        }
    }
}

const LOCAL_TIMES: &str = "document.querySelectorAll('time[datetime]').forEach(function(t){\
var d=new Date(t.getAttribute('datetime'));if(!isNaN(d)){t.textContent=d.toLocaleString();}});";

/// A time: UTC in the page and on hover; the browser shows it in its zone.
pub fn time(at: DateTime<Utc>) -> Markup {
    let utc = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(at.to_rfc3339()) title=(utc) { (utc) } }
}

/// A page that says what went wrong and what to do.
pub fn error_page(
    session: Option<&Session>,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let body = html! {
        h1 { (title) }
        p role="alert" { (message) }
        p { a href="/" { "Back to the console" } }
    };
    (status, page(session, title, body)).into_response()
}
