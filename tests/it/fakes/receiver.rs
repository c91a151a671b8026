//! A webhook receiver on loopback, as an integration's endpoint would be: it records
//! every request (headers, body, when), verifies Standard Webhooks signatures the
//! way a receiver's library does, and answers what the test queued (a status, a
//! `Retry-After`, a slow or huge answer, a redirect), else 204.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// What the next request gets instead of 204.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// 429 with `Retry-After: {seconds}`.
    RetryAfter(u64),
    /// 204 after this delay.
    Slow(Duration),
    /// 500 with a body of this many bytes.
    Huge(usize),
    /// 302 to this URL.
    Redirect(String),
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub status: u16,
    pub at: Instant,
}

impl Received {
    pub fn event(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The event's position in the log.
    pub fn position(&self) -> i64 {
        self.event()["event"]["position"].as_i64().unwrap_or(-1)
    }

    /// Whether one of the signatures verifies with `secret` (`whsec_…`).
    pub fn signed_by(&self, secret: &str) -> bool {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.{}", self.id, self.timestamp, self.body).as_bytes());
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        self.signature.split(' ').any(|s| s == expected)
    }
}

#[derive(Default)]
struct Inner {
    answers: VecDeque<Answer>,
    received: Vec<Received>,
}

pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inner, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/workflowops", self.addr)
    }

    /// The next requests get these answers, in order.
    pub fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().answers.extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until `n` requests were accepted.
    pub async fn wait_accepted(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} accepted: {:?}",
                accepted.len(),
                self.received()
                    .iter()
                    .map(|r| (&r.id, r.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let answer = inner.lock().unwrap().answers.pop_front();
    type Reply = (
        u16,
        Option<(&'static str, String)>,
        Option<Duration>,
        Vec<u8>,
    );
    let (status, extra, delay, payload): Reply = match answer {
        None => (204, None, None, vec![]),
        Some(Answer::Status(status)) => (status, None, None, b"{\"error\":\"no\"}".to_vec()),
        Some(Answer::RetryAfter(seconds)) => (
            429,
            Some(("retry-after", seconds.to_string())),
            None,
            vec![],
        ),
        Some(Answer::Slow(delay)) => (204, None, Some(delay), vec![]),
        Some(Answer::Huge(bytes)) => (500, None, None, vec![b'x'; bytes]),
        Some(Answer::Redirect(to)) => (302, Some(("location", to)), None, vec![]),
    };
    inner.lock().unwrap().received.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).to_string(),
        status,
        at: Instant::now(),
    });
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Body::from(payload));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some((name, value)) = extra {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
