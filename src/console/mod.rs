//! The web console: server-rendered pages served by the same
//! binary, another client of the read models (the queries the GraphQL API uses).
//!
//! Every page works as plain links and forms. Signing in keeps the pasted bearer
//! token in an `HttpOnly`, `SameSite=Strict` cookie; every request verifies it as
//! the API does, so the tenant and role come from the token only. Every
//! state-changing form carries a CSRF token derived from the session (an HMAC keyed
//! with the session's token: a page of another site can neither read the cookie
//! nor compute it), checked before anything else.
//!
//! Pages: the workflow matrix (filters with counts, keyset pages, cells linking to
//! the workflow's history), environments (with sync, Git sync and drift-check
//! buttons), incidents (list, detail with the drift snapshot's diff and the
//! timeline, the allowed transitions as forms, approvals), promotions (compare,
//! create, approve, deploy, cancel), deployments (live progress over the event
//! stream, recovery), snapshots (restore), the audit trail, aggregate histories,
//! log verification and a live event feed.

mod actions;
mod audit;
mod drift;
mod environments;
mod incidents;
mod layout;
mod matrix;
mod promotions;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use maud::{html, Markup};
use serde::Deserialize;
use sha2::Sha256;

use crate::http::auth::Principal;
use crate::http::HttpState;

/// The session cookie's name.
pub const COOKIE: &str = "wfo_session";
/// Longest token accepted from the sign-in form.
const MAX_TOKEN: usize = 4096;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(ticket_sign_in).post(sign_in))
        .route("/signout", post(sign_out))
        .route("/matrix", get(matrix::page))
        .route("/environments", get(environments::page))
        .route("/incidents", get(incidents::list))
        .route("/incidents/{id}", get(incidents::detail))
        .route("/incidents/{id}/transition", post(incidents::transition))
        .route("/console.css", get(layout::stylesheet))
        .merge(promotions::routes())
        .merge(actions::routes())
        .merge(audit::routes())
}

/// A signed-in request: who, and the CSRF token of its session.
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.principal.role == aggregates::kernel::command::Role::Admin
    }

    /// The context of a command the console runs for this session (one
    /// correlation id per form submitted).
    pub fn command_context(&self) -> crate::command::bus::CommandContext {
        crate::command::bus::CommandContext {
            tenant: self.principal.tenant.clone(),
            actor: aggregates::Actor::new(self.principal.subject.clone(), self.principal.role),
            correlation_id: format!("console:{}", uuid::Uuid::new_v4()),
            causation_id: None,
        }
    }

    pub fn can_act(&self) -> bool {
        matches!(
            self.principal.role,
            aggregates::kernel::command::Role::Developer | aggregates::kernel::command::Role::Admin
        )
    }
}

/// The session token from the cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Whether the request carries a console session cookie.
pub fn has_session_cookie(headers: &HeaderMap) -> bool {
    cookie_token(headers).is_some()
}

/// Who the session cookie stands for (verified as a bearer token is).
pub fn cookie_principal(
    auth: &crate::http::auth::Auth,
    headers: &HeaderMap,
) -> Result<Principal, crate::http::auth::AuthError> {
    let token = cookie_token(headers).ok_or(crate::http::auth::AuthError::Missing)?;
    auth.verify(token)
}

/// The CSRF token of a session: HMAC-SHA256 of a fixed label keyed with the
/// session's token, base64url.
fn csrf_of(token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(b"workflowops console csrf");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The signed-in session, or the sign-in page saying why not (an expired or forged
/// cookie is cleared).
/// (The page is boxed: a `Response` is large.)
pub fn session(state: &HttpState, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    let Some(token) = cookie_token(headers) else {
        return Err(Box::new(sign_in_page(
            StatusCode::UNAUTHORIZED,
            None,
            false,
        )));
    };
    match state.auth.verify(token) {
        Ok(principal) => Ok(Session {
            principal,
            csrf: csrf_of(token),
        }),
        Err(error) => Err(Box::new(sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some(format!("Your session ended: {error}. Sign in again.")),
            true,
        ))),
    }
}

/// The session of a state-changing form, once its CSRF token checks out.
pub fn form_session(
    state: &HttpState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Session, Box<Response>> {
    let session = session(state, headers)?;
    check_csrf(&session, csrf)?;
    Ok(session)
}

/// Checks a form's CSRF token against the session's (constant time).
fn check_csrf(session: &Session, sent: &str) -> Result<(), Box<Response>> {
    let (a, b) = (session.csrf.as_bytes(), sent.as_bytes());
    let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if same {
        Ok(())
    } else {
        Err(Box::new(layout::error_page(
            Some(session),
            StatusCode::FORBIDDEN,
            "This form has expired",
            "The form was not sent from this console (its security token is missing or \
             wrong), so nothing was changed. Reload the page and try again.",
        )))
    }
}

fn cookie(value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut text = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie() -> HeaderValue {
    cookie("", Some(0))
}

/// `GET /`: the matrix when signed in, else the sign-in form.
async fn home(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    match cookie_token(&headers) {
        None => sign_in_page(StatusCode::OK, None, false),
        Some(_) => match session(&state, &headers) {
            Ok(_) => Redirect::to("/matrix").into_response(),
            Err(page) => *page,
        },
    }
}

fn sign_in_page(status: StatusCode, message: Option<String>, clear: bool) -> Response {
    let body: Markup = html! {
        section.signin {
            h1 { "Sign in to workflowops" }
            @if let Some(message) = &message {
                p.error role="alert" { (message) }
            }
            form method="post" action="/signin" {
                label for="token" { "Bearer token" }
                textarea #token name="token" rows="4" required autocomplete="off" spellcheck="false" {}
                p.hint { "Paste a token from your administrator, or print one with "
                    code { "workflowops token --tenant <tenant> --role <role> --sub <you>" } "." }
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut response = (status, layout::page(None, "Sign in", body)).into_response();
    if clear {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, clear_cookie());
    }
    response
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /signin`: verifies the token, then keeps it in the session cookie (for as
/// long as the token is valid).
async fn sign_in(State(state): State<HttpState>, Form(form): Form<SignIn>) -> Response {
    let token = form.token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN {
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not a token: paste the whole bearer token.".into()),
            false,
        );
    }
    match state.auth.verify(token) {
        Ok(_) => {
            let mut response = Redirect::to("/matrix").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, cookie(token, None));
            response
        }
        Err(error) => sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some(format!("This token cannot sign in: {error}.")),
            false,
        ),
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /signout`: clears the session cookie.
async fn sign_out(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(page) = form_session(&state, &headers, &form.csrf) {
        return *page;
    }
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    response
}

/// An unknown page, for a browser.
pub fn not_found_page(headers: &HeaderMap) -> Option<Response> {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    wants_html.then(|| {
        layout::error_page(
            None,
            StatusCode::NOT_FOUND,
            "No such page",
            "This page does not exist. The matrix is at /matrix.",
        )
    })
}

/// A command's refusal in words, with what is allowed instead, and its status.
pub fn explain(error: &crate::command::bus::CommandError) -> (StatusCode, String) {
    use crate::command::bus::CommandError;
    use aggregates::kernel::error::DomainError;
    match error {
        CommandError::Refused(DomainError::InvalidTransition { from, allowed, .. }) => (
            StatusCode::CONFLICT,
            format!(
                "Refused: {error}. From {from} it can move to: {}.",
                if allowed.is_empty() {
                    "nothing".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        ),
        CommandError::Refused(DomainError::Forbidden(_)) => {
            (StatusCode::FORBIDDEN, format!("Refused: {error}."))
        }
        CommandError::Refused(DomainError::NotFound { .. }) => {
            (StatusCode::NOT_FOUND, format!("Refused: {error}."))
        }
        CommandError::Refused(DomainError::Conflict(_)) | CommandError::Conflict { .. } => (
            StatusCode::CONFLICT,
            format!("Refused: {error}. Nothing changed; reload and try again."),
        ),
        CommandError::Refused(_) => (StatusCode::BAD_REQUEST, format!("Refused: {error}.")),
        _ => {
            tracing::warn!(%error, "console: a command failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The change could not be recorded now; nothing changed. Try again.".to_string(),
            )
        }
    }
}

/// The page for a read that failed (the database did not answer).
pub fn unavailable(session: &Session, what: &str, error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "console: {what} cannot be read");
    layout::error_page(
        Some(session),
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{what} cannot be read now"),
        "The database did not answer. Try again in a moment.",
    )
}

/// Ids of the sign-in tickets already redeemed, with their expiry (Unix seconds):
/// each ticket opens one session. Kept in memory: a ticket lives ten minutes, so a
/// restart within them is the only way to redeem one twice (decision 43).
static REDEEMED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, i64>>> =
    std::sync::LazyLock::new(Default::default);

/// Records a ticket's id; false if it was redeemed before.
fn redeem(id: &str, expires: i64) -> bool {
    let now = chrono::Utc::now().timestamp();
    let mut redeemed = REDEEMED.lock().unwrap_or_else(|e| e.into_inner());
    redeemed.retain(|_, exp| *exp >= now);
    redeemed.insert(id.to_string(), expires).is_none()
}

#[derive(Deserialize)]
struct TicketParams {
    #[serde(default)]
    ticket: Option<String>,
}

/// `GET /signin?ticket=…`: the one-time sign-in link `workflowops token
/// --signin-url` prints. A valid, unused ticket opens a session (a new token for
/// the same subject, tenant and role); then a page leads on to the console (a
/// redirect would reach it as a cross-site navigation, without the `SameSite=Strict`
/// cookie).
async fn ticket_sign_in(
    State(state): State<HttpState>,
    axum::extract::Query(params): axum::extract::Query<TicketParams>,
) -> Response {
    let Some(ticket) = params
        .ticket
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
    else {
        return sign_in_page(StatusCode::OK, None, false);
    };
    let refused = |message: String| sign_in_page(StatusCode::UNAUTHORIZED, Some(message), false);
    let ticket = match state.auth.verify_ticket(&ticket) {
        Ok(ticket) => ticket,
        Err(crate::http::auth::AuthError::Expired) => {
            return refused(
                "This sign-in link has expired (links last ten minutes). Ask for a new one.".into(),
            )
        }
        Err(error) => return refused(format!("This sign-in link cannot be used: {error}.")),
    };
    if !redeem(&ticket.id, ticket.expires) {
        return refused(
            "This sign-in link was already used: each link signs in once. Ask for a new one."
                .into(),
        );
    }
    let principal = &ticket.principal;
    let role = format!("{:?}", principal.role).to_lowercase();
    let token = match state.auth.mint(
        principal.tenant.as_str(),
        &role,
        &principal.subject,
        ticket.session_ttl,
    ) {
        Ok(token) => token,
        Err(error) => return refused(format!("No session could be opened: {error}.")),
    };
    let body = html! {
        h1 { "Signed in" }
        p { "Signed in as " (principal.subject) " (" (role) ") of " (principal.tenant.as_str()) "." }
        p { a href="/matrix" autofocus { "Continue to the console" } }
    };
    let mut response = (StatusCode::OK, layout::page(None, "Signed in", body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        cookie(&token, Some(ticket.session_ttl.as_secs() as i64)),
    );
    headers.insert(header::REFRESH, HeaderValue::from_static("0; url=/matrix"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
