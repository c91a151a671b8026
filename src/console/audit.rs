//! `/audit`, `/audit/{type}/{id}`, `/audit/verify` and `/live`: the audit trail with
//! its filters, an aggregate's history and its state as of a position, the log
//! verification, and the live event feed.
//!
//! Every page reads what the GraphQL API's audit operations read, through the same
//! functions: the audit read model (`auditTrail`), the log replayed per aggregate
//! (`eventHistory`, `aggregateAt`), the tenant's hash chains (`verifyEventLog`) and
//! the event feed (`GET /events`, which the live page follows with the session
//! cookie). Pages that walk or replay the log take the tenant's expensive slot, as
//! the API's requests for those fields do.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup, PreEscaped};
use projections::history::{self, AsOf, AGGREGATE_TYPES};
use projections::models::audit::{self as model, AuditEntry, AuditFilter};
use projections::query::QueryError;
use serde::Deserialize;

use super::layout::{self, time};
use super::{session, Session};
use crate::http::admission::Permit;
use crate::http::feed::local_id;
use crate::http::HttpState;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/audit", get(trail))
        .route("/audit/verify", get(verify))
        .route("/audit/{aggregate_type}/{aggregate_id}", get(history_page))
        .route("/live", get(live))
}

/// Entries per page of the trail.
const PAGE: i64 = 50;
/// Events the live page renders before it follows the stream.
const LIVE: i64 = 50;
/// Longest text filter (aggregate id, actor, time) or cursor accepted.
const MAX_FILTER: usize = 256;

/// `value` cut to at most `max` bytes (on a character boundary), to echo input back.
fn cut(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A path segment, percent-encoded (ids may hold any character a token allows).
fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The history page of an aggregate.
pub(super) fn history_url(aggregate_type: &str, aggregate_id: &str) -> String {
    format!(
        "/audit/{}/{}",
        segment(aggregate_type),
        segment(aggregate_id)
    )
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()))
        .finish()
}

fn unavailable(session: &Session, what: &str, error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "console: {what} cannot be read");
    layout::error_page(
        Some(session),
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("The {what} cannot be read now"),
        "The database did not answer. Try again in a moment.",
    )
}

/// The tenant's slot for work that walks or replays the log (one at a time per
/// tenant, shared with the API's `verifyEventLog`, `eventHistory`, `aggregateAt`).
async fn expensive_slot(state: &HttpState, session: &Session) -> Result<Permit, Response> {
    state
        .context
        .admission
        .admit(session.principal.tenant.as_str(), true)
        .await
        .map_err(|busy| {
            let mut page = layout::error_page(
                Some(session),
                StatusCode::TOO_MANY_REQUESTS,
                "Busy: try again in a moment",
                &format!("{busy}. Reload the page in a second."),
            );
            page.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            page
        })
}

/// Runs `work` within the request deadline the API uses.
async fn within_deadline<T>(
    state: &HttpState,
    session: &Session,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Response> {
    let deadline = state.context.admission.limits().deadline;
    tokio::time::timeout(deadline, work).await.map_err(|_| {
        layout::error_page(
            Some(session),
            StatusCode::SERVICE_UNAVAILABLE,
            "This took too long",
            &format!(
                "The answer did not come within {} s and the work was stopped. Try again later.",
                deadline.as_secs()
            ),
        )
    })
}

// ---------------------------------------------------------------- the trail

#[derive(Debug, Default, Deserialize)]
pub struct TrailParams {
    #[serde(default)]
    aggregate_type: Option<String>,
    #[serde(default)]
    aggregate_id: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

fn text(value: &Option<String>) -> &str {
    value.as_deref().map(str::trim).unwrap_or_default()
}

impl TrailParams {
    /// The query string of these filters (no cursor), then `after` if given.
    fn url(&self, after: Option<&str>) -> String {
        let mut pairs = vec![
            ("aggregate_type", text(&self.aggregate_type)),
            ("aggregate_id", text(&self.aggregate_id)),
            ("actor", text(&self.actor)),
            ("from", text(&self.from)),
            ("to", text(&self.to)),
        ];
        if let Some(after) = after {
            pairs.push(("after", after));
        }
        format!("/audit?{}", query_string(&pairs))
    }

    fn filtered(&self) -> bool {
        [
            &self.aggregate_type,
            &self.aggregate_id,
            &self.actor,
            &self.from,
            &self.to,
        ]
        .iter()
        .any(|v| !text(v).is_empty())
    }

    /// The filter these parameters ask for, or what is wrong with them.
    fn check(&self) -> Result<AuditFilter, String> {
        for (name, value) in [
            ("aggregate id", &self.aggregate_id),
            ("actor", &self.actor),
            ("from", &self.from),
            ("to", &self.to),
            ("page cursor", &self.after),
        ] {
            if text(value).len() > MAX_FILTER {
                return Err(format!(
                    "The {name} is too long: at most {MAX_FILTER} characters."
                ));
            }
        }
        let aggregate_type = match text(&self.aggregate_type) {
            "" => None,
            t if AGGREGATE_TYPES.contains(&t) => Some(t.to_string()),
            t => {
                return Err(format!(
                    "{:?} is not an aggregate type; pick one from the list.",
                    cut(t, 64)
                ))
            }
        };
        let from = parse_time("from", text(&self.from))?;
        let to = parse_time("to", text(&self.to))?;
        if let (Some(from), Some(to)) = (from, to) {
            if from >= to {
                return Err("The end of the time range must be after its start.".into());
            }
        }
        let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Ok(AuditFilter {
            aggregate_type,
            aggregate_id: some(text(&self.aggregate_id)),
            actor: some(text(&self.actor)),
            from,
            to,
        })
    }
}

/// A time from a `datetime-local` input (UTC) or RFC 3339.
fn parse_time(name: &str, value: &str) -> Result<Option<DateTime<Utc>>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(value, format) {
            return Ok(Some(at.and_utc()));
        }
    }
    Err(format!(
        "{:?} is not a time for \"{name}\": use the date picker, or write it as \
         2024-05-31T14:30 (UTC) or 2024-05-31T14:30:00+02:00.",
        cut(value, 64)
    ))
}

/// A time as a `datetime-local` value (UTC).
fn local_value(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S").to_string()
}

pub async fn trail(
    State(state): State<HttpState>,
    headers: HeaderMap,
    params: Result<Query<TrailParams>, QueryRejection>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => {
            return trail_page(
                &session,
                &TrailParams::default(),
                None,
                Err(format!(
                    "These filters cannot be read ({}). Start again.",
                    rejection.body_text()
                )),
            )
        }
    };
    let filter = match params.check() {
        Ok(filter) => filter,
        Err(problem) => return trail_page(&session, &params, None, Err(problem)),
    };
    let after = Some(text(&params.after)).filter(|a| !a.is_empty());
    let read = model::audit_trail(
        &state.context.store,
        session.principal.tenant.as_str(),
        &filter,
        PAGE,
        after,
    )
    .await;
    match read {
        Ok(page) => trail_page(&session, &params, Some(&filter), Ok(page)),
        Err(QueryError::Validation { message, .. }) => trail_page(
            &session,
            &params,
            Some(&filter),
            Err(format!(
                "This page cannot be shown: {message}. Start again from the first page."
            )),
        ),
        Err(error) => unavailable(&session, "audit trail", error),
    }
}

/// The trail page: the filters, then the page read or what was wrong (400).
fn trail_page(
    session: &Session,
    params: &TrailParams,
    filter: Option<&AuditFilter>,
    read: Result<projections::query::Page<AuditEntry>, String>,
) -> Response {
    let status = if read.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let chosen_type = text(&params.aggregate_type);
    // times are shown back as the inputs take them (UTC)
    let time_value = |raw: &Option<String>, parsed: Option<DateTime<Utc>>| match parsed {
        Some(at) => local_value(at),
        None => cut(text(raw), MAX_FILTER).to_string(),
    };
    let from_value = time_value(&params.from, filter.and_then(|f| f.from));
    let to_value = time_value(&params.to, filter.and_then(|f| f.to));
    let after = text(&params.after);
    let body = html! {
        h1 { "Audit trail" }
        p { "Every recorded change of your tenant, in log order (the order of commits), oldest first. "
            a href="/audit/verify" { "Verify the event log" } " · "
            a href="/live" { "Live events" } }
        form.filters method="get" action="/audit" {
            label { "Aggregate type" select name="aggregate_type" {
                option value="" { "any" }
                @for t in AGGREGATE_TYPES { option value=(t) selected[chosen_type == *t] { (t) } }
            } }
            label { "Aggregate id" input name="aggregate_id" maxlength=(MAX_FILTER)
                value=(cut(text(&params.aggregate_id), MAX_FILTER)); }
            label { "Actor (user id or system:job)" input name="actor" maxlength=(MAX_FILTER)
                value=(cut(text(&params.actor), MAX_FILTER)); }
            label { "From (UTC, inclusive)" input type="datetime-local" name="from" step="1"
                value=(from_value); }
            label { "To (UTC, exclusive)" input type="datetime-local" name="to" step="1"
                value=(to_value); }
            button type="submit" { "Filter" }
            a href="/audit" { "Clear" }
        }
        @match &read {
            Err(problem) => { p.error role="alert" { (problem) } }
            Ok(page) => {
                @if page.items.is_empty() {
                    p.empty {
                        @if !after.is_empty() {
                            "No more events after this page. " a href=(params.url(None)) { "Back to the first page" }
                        } @else if params.filtered() {
                            "No event matches these filters. Widen the time range or clear a filter: "
                            a href="/audit" { "show every event" } "."
                        } @else {
                            "No event is recorded yet. Register an environment (the "
                            code { "registerEnvironment" } " mutation) and sync it: every change then appears here."
                        }
                    }
                } @else {
                    div.scroll { table {
                        caption.muted { "Oldest first. Times in UTC on hover." }
                        thead { tr {
                            th scope="col" { "Position" } th scope="col" { "Time" }
                            th scope="col" { "Aggregate" } th scope="col" { "Event" }
                            th scope="col" { "Transition" } th scope="col" { "Actor" }
                            th scope="col" { "Reason" } th scope="col" { "Admin override" }
                        } }
                        tbody { @for e in &page.items { (trail_row(e)) } }
                    } }
                    p {
                        @if !after.is_empty() {
                            a href=(params.url(None)) { "← First page" } " "
                        }
                        @if page.has_next_page {
                            @if let Some(cursor) = &page.end_cursor {
                                a href=(params.url(Some(cursor))) rel="next" { "Next page →" }
                            }
                        }
                    }
                }
            }
        }
    };
    (status, layout::page(Some(session), "Audit trail", body)).into_response()
}

fn trail_row(e: &AuditEntry) -> Markup {
    html! {
        tr {
            th scope="row" { (e.position) }
            td { (time(e.recorded_at)) }
            td { a href=(history_url(&e.aggregate_type, &e.aggregate_id)) {
                (e.aggregate_type) " " (e.aggregate_id) } }
            td { (e.event_type) }
            td { @if let Some(to) = &e.to_status {
                (e.from_status.as_deref().unwrap_or("—")) " → " (to) } }
            td { (e.actor) " (" (e.actor_role) ")" }
            td { (e.reason.as_deref().unwrap_or("")) }
            td { @if e.admin_override { strong { "admin override" } } @else { span.muted { "no" } } }
        }
    }
}

// ---------------------------------------------------------------- history

#[derive(Debug, Default, Deserialize)]
pub struct HistoryParams {
    #[serde(default)]
    at: Option<String>,
}

fn no_such_aggregate(session: &Session) -> Response {
    layout::error_page(
        Some(session),
        StatusCode::NOT_FOUND,
        "No such aggregate",
        "This aggregate has no event (or is not your tenant's). The audit trail at /audit \
         links every aggregate that has one.",
    )
}

pub async fn history_page(
    State(state): State<HttpState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let Ok(Path((aggregate_type, aggregate_id))) = path else {
        return no_such_aggregate(&session);
    };
    if !AGGREGATE_TYPES.contains(&aggregate_type.as_str())
        || aggregate_id.is_empty()
        || aggregate_id.len() > MAX_FILTER
    {
        return no_such_aggregate(&session);
    }
    let at = match params {
        Err(_) => None,
        Ok(Query(params)) => params.at,
    };
    let at = match at.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        None => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(position) if position >= 0 => Some(position),
            _ => {
                return layout::error_page(
                    Some(&session),
                    StatusCode::BAD_REQUEST,
                    "Not a position",
                    &format!(
                        "{:?} is not a position in the log: give the number of an event \
                         (the first column of the history), or leave it empty for the \
                         latest state.",
                        cut(raw, 64)
                    ),
                )
            }
        },
    };
    let _slot = match expensive_slot(&state, &session).await {
        Ok(slot) => slot,
        Err(page) => return page,
    };
    let store = &state.context.store;
    let tenant = session.principal.tenant.as_str();
    let read = within_deadline(&state, &session, async {
        let events = history::event_history(store, tenant, &aggregate_type, &aggregate_id).await?;
        if events.is_empty() {
            return Ok((events, None));
        }
        let as_of = AsOf {
            at: None,
            position: at,
        };
        let replayed =
            history::state_at(store, tenant, &aggregate_type, &aggregate_id, as_of).await?;
        Ok::<_, QueryError>((events, replayed))
    })
    .await;
    let (events, replayed) = match read {
        Err(page) => return page,
        Ok(Ok((events, _))) if events.is_empty() => return no_such_aggregate(&session),
        Ok(Ok(read)) => read,
        Ok(Err(error)) => return unavailable(&session, "aggregate's history", error),
    };
    let self_url = history_url(&aggregate_type, &aggregate_id);
    let trail_url = format!(
        "/audit?{}",
        query_string(&[
            ("aggregate_type", aggregate_type.as_str()),
            ("aggregate_id", aggregate_id.as_str()),
        ])
    );
    let first = &events[0];
    let body = html! {
        h1 { (aggregate_type) " " (aggregate_id) }
        p { (events.len()) @if events.len() == 1 { " event" } @else { " events" }
            ", replayed from the log. " a href=(trail_url) { "Its audit trail" } }
        h2 { "State" }
        form.filters method="get" action=(self_url) {
            label { "State as of position" input type="number" name="at" min="0" step="1"
                value=[at]; }
            button type="submit" { "Show" }
            a href=(self_url) { "Latest" }
        }
        @match (&replayed, at) {
            (Some(r), _) => {
                p {
                    @if let Some(at) = at { "As of position " (at) ": " } @else { "Latest: " }
                    "after the event at position " (r.position.unwrap_or_default())
                    " (sequence " (r.sequence.unwrap_or_default()) ")"
                    @if let Some(when) = r.recorded_at { ", recorded " (time(when)) }
                    "."
                }
                div.scroll { pre { code { (pretty(&r.state)) } } }
            }
            (None, Some(at)) => {
                p.empty { "It did not exist yet at position " (at) ": its first event is at position "
                    (first.position) ". " a href=(format!("{self_url}?at={}", first.position)) { "Its first state" } }
            }
            (None, None) => { p.empty { "It has no state to show." } }
        }
        h2 { "Events" }
        div.scroll { table {
            caption.muted { "In sequence order. Times in UTC on hover." }
            thead { tr {
                th scope="col" { "Position" } th scope="col" { "Sequence" }
                th scope="col" { "Event" } th scope="col" { "Time" }
                th scope="col" { "Actor" } th scope="col" { "Payload" }
            } }
            tbody { @for e in &events {
                @let meta = |key: &str| e.metadata.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                tr {
                    th scope="row" { (e.position) }
                    td { (e.sequence) }
                    td { (e.event_type) br; a href=(format!("{self_url}?at={}", e.position)) { "state after it" } }
                    td { (time(e.recorded_at)) }
                    td { (meta("actor")) " (" (meta("actor_role")) ")"
                        @let reason = meta("reason");
                        @if !reason.is_empty() { br; span.muted { "reason: " (reason) } } }
                    td { details {
                        summary { "payload" }
                        pre { code { (pretty(&e.payload)) } }
                        @if let Some(hash) = e.hash() { p.hash { "chain hash " (hash) } }
                    } }
                }
            } }
        } }
    };
    (
        StatusCode::OK,
        layout::page(
            Some(&session),
            &format!("{aggregate_type} {aggregate_id}"),
            body,
        ),
    )
        .into_response()
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

// ---------------------------------------------------------------- verification

pub async fn verify(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let _slot = match expensive_slot(&state, &session).await {
        Ok(slot) => slot,
        Err(page) => return page,
    };
    let tenant = session.principal.tenant.as_str();
    let report =
        match within_deadline(&state, &session, state.context.store.verify_tenant(tenant)).await {
            Err(page) => return page,
            Ok(Err(error)) => return unavailable(&session, "event log", error),
            Ok(Ok(report)) => report,
        };
    let body = html! {
        h1 { "Event log verification" }
        p.muted { "Walks the hash chain of every aggregate of your tenant: each event's hash must \
            match its content and the hash before it, and sequences must have no gap." }
        @if report.ok {
            p role="status" { span.state.IN_SYNC { "OK" } " "
                "The log is intact: every chain checks out over " (report.checked_events)
                @if report.checked_events == 1 { " event." } @else { " events." } }
        } @else {
            p.error role="alert" { strong { "Broken." } " "
                @if let Some(p) = report.first_broken_position {
                    "The first broken link is at position " (p) ": "
                    (report.broken.first().map(|b| b.reason.as_str()).unwrap_or("see below")) "."
                } @else { "A chain does not check out (see below)." } }
        }
        dl {
            dt { "Result" } dd { @if report.ok { "OK" } @else { "broken" } }
            dt { "Events checked" } dd { (report.checked_events) }
            dt { "First broken position" } dd { @match report.first_broken_position {
                Some(p) => (p), None => "none" } }
            dt { "Broken links reported" } dd { (report.broken.len()) }
        }
        @if !report.broken.is_empty() {
            div.scroll { table {
                caption.muted { "The broken links found, in the order walked." }
                thead { tr {
                    th scope="col" { "Position" } th scope="col" { "Aggregate" }
                    th scope="col" { "Sequence" } th scope="col" { "Why" }
                } }
                tbody { @for b in &report.broken {
                    @let id = local_id(&b.aggregate_id);
                    tr {
                        th scope="row" { (b.position) }
                        td { a href=(history_url(&b.aggregate_type, &id)) { (b.aggregate_type) " " (id) } }
                        td { (b.sequence) }
                        td { (b.reason) }
                    }
                } }
            } }
        }
        p { a href="/audit/verify" { "Verify again" } " · " a href="/audit" { "Back to the audit trail" } }
    };
    (
        StatusCode::OK,
        layout::page(Some(&session), "Event log verification", body),
    )
        .into_response()
}

// ---------------------------------------------------------------- live feed

#[derive(Debug, Default, Deserialize)]
pub struct LiveParams {
    #[serde(default)]
    aggregate_type: Option<String>,
}

/// Follows `/events` from the table's `data-stream` and prepends each event.
const FOLLOW: &str = r#"(function(){
var rows=document.getElementById('live-rows'),status=document.getElementById('live-status');
if(!rows||!window.EventSource){return;}
var empty=document.getElementById('live-empty');
function cell(tr,node){var td=document.createElement('td');td.appendChild(node);tr.appendChild(td);return td;}
function text(t){return document.createTextNode(t==null?'':String(t));}
var source=new EventSource(rows.getAttribute('data-stream'));
status.textContent='connecting…';
source.onopen=function(){status.textContent='live';};
source.onerror=function(){status.textContent='reconnecting';};
source.onmessage=function(m){
var e;try{e=JSON.parse(m.data);}catch(_){return;}
if(document.getElementById('ev-'+e.position)){return;}
var tr=document.createElement('tr');tr.id='ev-'+e.position;
var th=document.createElement('th');th.setAttribute('scope','row');th.appendChild(text(e.position));tr.appendChild(th);
var t=document.createElement('time');t.setAttribute('datetime',e.recordedAt);
var d=new Date(e.recordedAt);t.title=e.recordedAt;t.appendChild(text(isNaN(d)?e.recordedAt:d.toLocaleString()));cell(tr,t);
var a=document.createElement('a');a.href='/audit/'+encodeURIComponent(e.aggregateType)+'/'+encodeURIComponent(e.aggregateId);
a.appendChild(text(e.aggregateType+' '+e.aggregateId));cell(tr,a);
cell(tr,text(e.eventType));
rows.insertBefore(tr,rows.firstChild);
if(empty){empty.hidden=true;}
status.textContent='live';
};
})();"#;

pub async fn live(
    State(state): State<HttpState>,
    headers: HeaderMap,
    params: Result<Query<LiveParams>, QueryRejection>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let chosen = match &params {
        Ok(Query(params)) => text(&params.aggregate_type).to_string(),
        Err(_) => String::new(),
    };
    if !chosen.is_empty() && !AGGREGATE_TYPES.contains(&chosen.as_str()) {
        return layout::error_page(
            Some(&session),
            StatusCode::BAD_REQUEST,
            "Unknown aggregate type",
            &format!(
                "{:?} is not an aggregate type; pick one from the list on /live.",
                cut(&chosen, 64)
            ),
        );
    }
    // The stream starts after the newest event shown, or (nothing shown) where the
    // read model stood before it was read: no event is missed and none repeated.
    let checkpoint = state
        .context
        .projections
        .status()
        .into_iter()
        .find(|p| p.name == model::NAME)
        .map_or(0, |p| p.checkpoint.position);
    let filter = AuditFilter {
        aggregate_type: (!chosen.is_empty()).then(|| chosen.clone()),
        ..Default::default()
    };
    let rows = match model::latest(
        &state.context.store,
        session.principal.tenant.as_str(),
        &filter,
        LIVE,
    )
    .await
    {
        Ok(rows) => rows,
        Err(error) => return unavailable(&session, "events", error),
    };
    let from = rows.first().map_or(checkpoint, |e| e.position);
    let stream = format!(
        "/events?{}",
        query_string(&[
            ("from", from.to_string().as_str()),
            ("aggregateTypes", chosen.as_str()),
        ])
    );
    let reload = match chosen.as_str() {
        "" => "/live".to_string(),
        t => format!("/live?{}", query_string(&[("aggregate_type", t)])),
    };
    let body = html! {
        h1 { "Live events" }
        p { "Your tenant's newest events, newest first; new ones appear at the top as they are recorded. "
            a href="/audit" { "The audit trail" } " has every event with filters." }
        form.filters method="get" action="/live" {
            label { "Aggregate type" select name="aggregate_type" {
                option value="" { "any" }
                @for t in AGGREGATE_TYPES { option value=(t) selected[chosen == *t] { (t) } }
            } }
            button type="submit" { "Filter" }
            a href="/live" { "Clear" }
        }
        p id="live-status" aria-live="polite" role="status" {
            "Not following new events: " a href=(reload) { "reload" } " to see them."
        }
        @if rows.is_empty() {
            p.empty id="live-empty" { "No event yet"
                @if !chosen.is_empty() { " of type " (chosen) }
                ". Events appear here as they are recorded: register or sync an environment, \
                 or run a drift check." }
        }
        div.scroll { table {
            caption.muted { "Newest first. Times in UTC on hover." }
            thead { tr {
                th scope="col" { "Position" } th scope="col" { "Time" }
                th scope="col" { "Aggregate" } th scope="col" { "Event" }
            } }
            tbody id="live-rows" data-stream=(stream) data-from=(from) {
                @for e in &rows {
                    tr id=(format!("ev-{}", e.position)) {
                        th scope="row" { (e.position) }
                        td { (time(e.recorded_at)) }
                        td { a href=(history_url(&e.aggregate_type, &e.aggregate_id)) {
                            (e.aggregate_type) " " (e.aggregate_id) } }
                        td { (e.event_type) }
                    }
                }
            }
        } }
        p { a href=(reload) { "Reload" } }
        script { (PreEscaped(FOLLOW)) }
    };
    (
        StatusCode::OK,
        layout::page(Some(&session), "Live events", body),
    )
        .into_response()
}
