//! The event stream: the `events` subscription (graphql-transport-ws) and the SSE
//! stream each deliver the scenario's events in order, and a client that reconnects
//! from its last position gets the rest with no gap and no duplicate.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::walkthrough::{open_incident, TENANT};
use super::{register_environment, Api};
use crate::support::{both_backends, Kind};

const WAIT: Duration = Duration::from_secs(10);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-transport-ws client subscribed to `events`.
pub struct Subscription {
    socket: Socket,
}

impl Subscription {
    pub async fn open(api: &Api, token: &str, arguments: &str) -> Subscription {
        let mut request = format!("ws://{}/graphql/ws", api.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket upgrade");
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
        socket.send(Message::text(init.to_string())).await.unwrap();
        let ack = next_json(&mut socket).await.expect("connection_ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        let query = format!(
            "subscription {{ events({arguments}) {{ position aggregateType aggregateId sequence eventType metadata }} }}"
        );
        let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .unwrap();
        Subscription { socket }
    }

    /// The next event (fails the test after [`WAIT`]).
    pub async fn next(&mut self) -> Value {
        loop {
            let message = next_json(&mut self.socket)
                .await
                .expect("the stream delivers the next event");
            match message["type"].as_str() {
                Some("next") => return message["payload"]["data"]["events"].clone(),
                Some("ping") => {
                    let pong = json!({ "type": "pong" }).to_string();
                    self.socket.send(Message::text(pong)).await.unwrap();
                }
                _ => panic!("unexpected message {message}"),
            }
        }
    }

    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await);
        }
        events
    }

    /// Nothing more arrives within `quiet`.
    pub async fn assert_idle(&mut self, quiet: Duration) {
        if let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, self.socket.next()).await {
            panic!("unexpected message {message:?}");
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .ok()??
            .ok()?;
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// A Server-Sent Events client of `GET /events`.
pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buffer: String,
}

impl SseClient {
    pub async fn open(
        api: &Api,
        token: &str,
        query: &str,
        last_event_id: Option<i64>,
    ) -> SseClient {
        let mut request = api
            .http
            .get(format!("{}/events?{query}", api.base))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("GET /events");
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseClient {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|b| b.to_vec())),
            ),
            buffer: String::new(),
        }
    }

    /// The next event as (id, data).
    pub async fn next(&mut self) -> (i64, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                match id {
                    Some(id) => return (id, serde_json::from_str(&data).unwrap()),
                    None => continue, // a keep-alive comment
                }
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("the SSE stream delivers the next event")
                .expect("the stream is open")
                .unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// Scenario 3's incident, through the API: acknowledge, stabilize, reconcile, close.
async fn run_lifecycle(api: &Api, incident: &str) {
    let admin = api.token(TENANT, "admin", "admin-1");
    for (mutation, args) in [
        ("acknowledgeIncident", ", reason: \"looking\""),
        ("stabilizeIncident", ", reason: \"hotfix in Git\""),
        ("reconcileIncident", ", resolutionType: PROMOTE"),
        ("closeIncident", ", reason: \"resolved\""),
    ] {
        let query = format!("mutation($id: ID!) {{ {mutation}(id: $id{args}) {{ position }} }}");
        api.ok(&admin, &query, json!({ "id": incident })).await;
    }
}

const LIFECYCLE: [&str; 5] = [
    "incident.detected",
    "incident.acknowledged",
    "incident.stabilized",
    "incident.reconciled",
    "incident.closed",
];

async fn subscription_delivers_events_in_order_and_resumes_without_gap(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let viewer = api.token(TENANT, "viewer", "integration");
    register_environment(&api, &admin, "production", "PRODUCTION").await;

    // a live subscriber to incidents only, before anything happens
    let mut live = Subscription::open(&api, &viewer, "aggregateTypes: [\"incident\"]").await;
    let (incident, _) = open_incident(&api, TENANT, "production").await;
    run_lifecycle(&api, &incident).await;
    let events = live.take(5).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, LIFECYCLE);
    assert!(events.iter().all(|e| e["aggregateId"] == incident.as_str()));
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    assert_eq!(events[1]["metadata"]["actor"], "admin-1");
    live.assert_idle(Duration::from_millis(300)).await;
    live.close().await;

    // everything from the start: the full log of the tenant, in order
    let mut all = Subscription::open(&api, &viewer, "fromPosition: 0").await;
    let total = api.event_count().await as usize;
    let everything = all.take(total).await;
    all.close().await;
    let positions: Vec<i64> = everything
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // a client that read 3 events, dropped, and reconnects from its last position
    let mut first = Subscription::open(&api, &viewer, "fromPosition: 0").await;
    let head = first.take(3).await;
    first.close().await;
    let last = head[2]["position"].as_i64().unwrap();
    let mut resumed = Subscription::open(&api, &viewer, &format!("fromPosition: {last}")).await;
    let rest = resumed.take(total - 3).await;
    let joined: Vec<Value> = head.into_iter().chain(rest).collect();
    assert_eq!(joined, everything, "no gap, no duplicate");
    // and then live: the next event arrives on the resumed stream
    let (_, opened) = open_incident(&api, TENANT, "production").await;
    let next = resumed.next().await;
    assert_eq!(next["eventType"], "environment.incident_slot_reserved");
    let next = resumed.next().await;
    assert_eq!(next["eventType"], "incident.detected");
    assert_eq!(next["position"], opened);
    resumed.close().await;
    api.stop().await;
}

async fn sse_delivers_events_in_order_and_resumes_from_last_event_id(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let viewer = api.token(TENANT, "viewer", "integration");
    register_environment(&api, &admin, "production", "PRODUCTION").await;

    let mut live = SseClient::open(&api, &viewer, "aggregateTypes=incident", None).await;
    let (incident, _) = open_incident(&api, TENANT, "production").await;
    run_lifecycle(&api, &incident).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(live.next().await);
    }
    let types: Vec<&str> = seen
        .iter()
        .map(|(_, e)| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, LIFECYCLE);
    assert!(
        seen.iter().all(|(id, e)| e["position"] == *id),
        "id: is the position"
    );
    drop(live);

    // the whole log, then a reconnect with Last-Event-ID after 2 events
    let total = api.event_count().await as usize;
    let mut all = SseClient::open(&api, &viewer, "from=0", None).await;
    let mut everything = Vec::new();
    for _ in 0..total {
        everything.push(all.next().await);
    }
    drop(all);
    let mut first = SseClient::open(&api, &viewer, "from=0", None).await;
    let head = vec![first.next().await, first.next().await];
    drop(first);
    // the browser reconnects to the same URL and sends Last-Event-ID
    let mut resumed = SseClient::open(&api, &viewer, "from=0", Some(head[1].0)).await;
    let mut joined = head;
    for _ in 2..total {
        joined.push(resumed.next().await);
    }
    assert_eq!(joined, everything, "no gap, no duplicate");
    // `?from=` alone resumes too
    let mut from = SseClient::open(
        &api,
        &viewer,
        &format!("from={}", everything[total - 2].0),
        None,
    )
    .await;
    assert_eq!(from.next().await, everything[total - 1]);
    api.stop().await;
}

both_backends!(
    subscription_delivers_events_in_order_and_resumes_without_gap,
    sse_delivers_events_in_order_and_resumes_from_last_event_id
);
