//! An event as projections see it: the stored event's header, the metadata the read
//! models use and the typed domain event, decoded once per batch for every
//! projection, straight from the row's text (decision 84).

use aggregates::canonical::{CanonicalEvent, CanonicalStatus, CanonicalWorkflow};
use aggregates::credentials::{CredentialMap, CredentialMapEvent};
use aggregates::deployment::{Deployment, DeploymentEvent};
use aggregates::environment::{Environment, EnvironmentEvent, EnvironmentStatus};
use aggregates::incident::{DriftIncident, IncidentEvent};
use aggregates::kernel::ids::AggregateId;
use aggregates::mapping::{MappingEvent, WorkflowMapping};
use aggregates::pipeline::{Pipeline, PipelineEvent};
use aggregates::policy::{DriftPolicy, DriftPolicyEvent};
use aggregates::promotion::{Promotion, PromotionEvent};
use aggregates::webhook::{Webhook, WebhookEvent};
use chrono::{DateTime, SubsecRound as _, Utc};
use cqrs_es::Aggregate;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use eventstore::{EventHeader, LogCursor, RawEvent, StoreError, StoredEvent};

/// The domain event inside a stored event.
#[derive(Debug, Clone)]
pub enum Decoded {
    Environment(EnvironmentEvent),
    Canonical(CanonicalEvent),
    Mapping(MappingEvent),
    Incident(IncidentEvent),
    Promotion(PromotionEvent),
    Deployment(DeploymentEvent),
    Pipeline(PipelineEvent),
    DriftPolicy(DriftPolicyEvent),
    CredentialMap(CredentialMapEvent),
    Webhook(WebhookEvent),
    /// An aggregate no read model folds (reservations); the audit trail still lists it.
    Other,
    /// The payload does not decode as its aggregate's event: no projection that needs
    /// it may skip it silently.
    Undecodable(String),
}

/// One event of a batch.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The stored event's columns (named as [`StoredEvent`]'s).
    pub stored: EventHeader,
    pub event: Decoded,
    /// What the read models take from the metadata.
    pub meta: Meta,
    /// The payload as written, kept for incident events only: the incidents model
    /// stores an approval request as it was written, and their payload carries
    /// `admin_override` for the audit trail.
    payload: Option<Value>,
    /// The stored aggregate id, parsed (`None` when it does not parse: the event is
    /// then [`Decoded::Undecodable`]).
    id: Option<AggregateId>,
}

/// The metadata keys read models use. A key that is absent, or whose value is not
/// of the type read, counts as absent (as `Value::as_str` and `as_bool` would).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Meta {
    #[serde(deserialize_with = "lenient_string")]
    pub actor: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub actor_role: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub reason: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub correlation_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub causation_id: Option<String>,
    #[serde(deserialize_with = "lenient_flag")]
    pub admin_override: bool,
}

impl Meta {
    /// The keys used, from parsed metadata (with the same leniency as from text).
    fn from_map(metadata: Map<String, Value>) -> Meta {
        serde_json::from_value(Value::Object(metadata)).unwrap_or_default()
    }

    /// The metadata's text decoded straight into the keys used; anything the fast
    /// path refuses (not an object, a duplicate key, bad JSON) goes through a full
    /// parse, which reports bad JSON exactly as [`RawEvent::parse`] does.
    fn from_text(header: &EventHeader, text: &str) -> Result<Meta, StoreError> {
        if text.trim_start().starts_with('{') {
            if let Ok(meta) = serde_json::from_str(text) {
                return Ok(meta);
            }
        }
        let metadata: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| header.corrupt(format!("metadata: {e}")))?;
        Ok(Meta::from_map(metadata))
    }
}

/// Any JSON value; a string is kept, anything else is `None`.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    fn keep(v: Scalar<'_>) -> Option<String> {
        match v {
            Scalar::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }
    d.deserialize_any(Lenient(keep))
}

/// Any JSON value; `true` is true, anything else false.
fn lenient_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    fn keep(v: Scalar<'_>) -> bool {
        matches!(v, Scalar::Bool(true))
    }
    d.deserialize_any(Lenient(keep))
}

enum Scalar<'a> {
    Str(&'a str),
    Bool(bool),
    Other,
}

/// Visits any JSON value (skipping arrays and objects) and keeps what `keep` makes
/// of it.
struct Lenient<T>(fn(Scalar<'_>) -> T);

impl<'de, T> Visitor<'de> for Lenient<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(Scalar::Str(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<T, E> {
        Ok((self.0)(Scalar::Bool(v)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok((self.0)(Scalar::Other))
    }
    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok((self.0)(Scalar::Other))
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok((self.0)(Scalar::Other))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok((self.0)(Scalar::Other))
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok((self.0)(Scalar::Other))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((self.0)(Scalar::Other))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok((self.0)(Scalar::Other))
    }
}

fn decode<E: DeserializeOwned>(payload: &Value, wrap: fn(E) -> Decoded) -> Decoded {
    match E::deserialize(payload) {
        Ok(event) => wrap(event),
        Err(error) => Decoded::Undecodable(error.to_string()),
    }
}

/// The payload's text decoded straight into `E`. When that fails the text is parsed
/// as JSON: bad JSON is corrupt, as [`RawEvent::parse`] reports it, and JSON that is
/// not an `E` is undecodable with the message [`Envelope::new`] gives.
fn decode_text<E: DeserializeOwned>(
    header: &EventHeader,
    payload: &str,
    wrap: fn(E) -> Decoded,
) -> Result<Decoded, StoreError> {
    match serde_json::from_str(payload) {
        Ok(event) => Ok(wrap(event)),
        Err(_) => Ok(decode(&parse_payload(header, payload)?, wrap)),
    }
}

fn parse_payload(header: &EventHeader, payload: &str) -> Result<Value, StoreError> {
    serde_json::from_str(payload).map_err(|e| header.corrupt(format!("payload: {e}")))
}

/// Which aggregate an event belongs to, by its stored type.
#[derive(Clone, Copy)]
enum Kind {
    Environment,
    Canonical,
    Mapping,
    Incident,
    Promotion,
    Deployment,
    Pipeline,
    DriftPolicy,
    CredentialMap,
    Webhook,
    Other,
}

impl Kind {
    fn of(aggregate_type: &str) -> Kind {
        match aggregate_type {
            t if t == Environment::TYPE => Kind::Environment,
            t if t == CanonicalWorkflow::TYPE => Kind::Canonical,
            t if t == WorkflowMapping::TYPE => Kind::Mapping,
            t if t == DriftIncident::TYPE => Kind::Incident,
            t if t == Promotion::TYPE => Kind::Promotion,
            t if t == Deployment::TYPE => Kind::Deployment,
            t if t == Pipeline::TYPE => Kind::Pipeline,
            t if t == DriftPolicy::TYPE => Kind::DriftPolicy,
            t if t == CredentialMap::TYPE => Kind::CredentialMap,
            t if t == Webhook::TYPE => Kind::Webhook,
            _ => Kind::Other,
        }
    }
}

/// Calls `$decode` with the event type and `Decoded` variant of `$kind`
/// (`Kind::Other` → `$other`).
macro_rules! by_kind {
    ($kind:expr, $decode:ident($($arg:expr),*), $other:expr) => {
        match $kind {
            Kind::Environment => $decode::<EnvironmentEvent>($($arg,)* Decoded::Environment),
            Kind::Canonical => $decode::<CanonicalEvent>($($arg,)* Decoded::Canonical),
            Kind::Mapping => $decode::<MappingEvent>($($arg,)* Decoded::Mapping),
            Kind::Incident => $decode::<IncidentEvent>($($arg,)* Decoded::Incident),
            Kind::Promotion => $decode::<PromotionEvent>($($arg,)* Decoded::Promotion),
            Kind::Deployment => $decode::<DeploymentEvent>($($arg,)* Decoded::Deployment),
            Kind::Pipeline => $decode::<PipelineEvent>($($arg,)* Decoded::Pipeline),
            Kind::DriftPolicy => $decode::<DriftPolicyEvent>($($arg,)* Decoded::DriftPolicy),
            Kind::CredentialMap => $decode::<CredentialMapEvent>($($arg,)* Decoded::CredentialMap),
            Kind::Webhook => $decode::<WebhookEvent>($($arg,)* Decoded::Webhook),
            Kind::Other => $other,
        }
    };
}

impl Envelope {
    /// An event read from the log, decoded from its row's text without building
    /// JSON trees (except for incident events, whose payload is kept). It is the
    /// event [`Envelope::new`] makes of the row parsed, and fails as
    /// [`RawEvent::parse`] does.
    pub fn from_raw(raw: RawEvent<&str>) -> Result<Envelope, StoreError> {
        let (stored, payload, metadata) = raw.into_parts()?;
        let meta = Meta::from_text(&stored, metadata)?;
        let kind = Kind::of(&stored.aggregate_type);
        let (event, payload, id) = match AggregateId::parse(stored.aggregate_id.as_str()) {
            Err(error) => {
                parse_payload(&stored, payload)?;
                let event = Decoded::Undecodable(format!("aggregate id: {error}"));
                (event, None, None)
            }
            Ok(id) if matches!(kind, Kind::Incident) => {
                let payload = parse_payload(&stored, payload)?;
                (decode(&payload, Decoded::Incident), Some(payload), Some(id))
            }
            Ok(id) => {
                let event = by_kind!(kind, decode_text(&stored, payload), {
                    if serde_json::from_str::<IgnoredAny>(payload).is_err() {
                        parse_payload(&stored, payload)?;
                    }
                    Ok(Decoded::Other)
                })?;
                (event, None, Some(id))
            }
        };
        Ok(Envelope {
            stored,
            event,
            meta,
            payload,
            id,
        })
    }

    /// The event of a [`StoredEvent`] already parsed: the reference
    /// [`from_raw`](Envelope::from_raw) is held to.
    pub fn new(stored: StoredEvent) -> Envelope {
        let (stored, payload, metadata) = stored.into_parts();
        let meta = Meta::from_map(metadata);
        let kind = Kind::of(&stored.aggregate_type);
        let (event, id) = match AggregateId::parse(stored.aggregate_id.as_str()) {
            Ok(id) => (by_kind!(kind, decode(&payload), Decoded::Other), Some(id)),
            Err(error) => (Decoded::Undecodable(format!("aggregate id: {error}")), None),
        };
        let payload = (matches!(kind, Kind::Incident) && id.is_some()).then_some(payload);
        Envelope {
            stored,
            event,
            meta,
            payload,
            id,
        }
    }

    /// The payload as written, for incident events (`None` for the others).
    pub fn payload(&self) -> Option<&Value> {
        self.payload.as_ref()
    }

    /// The aggregate's id (`None` only for an undecodable event).
    pub fn id(&self) -> Option<&AggregateId> {
        self.id.as_ref()
    }

    pub fn cursor(&self) -> LogCursor {
        self.stored.cursor()
    }

    /// The tenant that owns the event (empty for an undecodable id).
    pub fn tenant(&self) -> &str {
        self.id.as_ref().map_or("", AggregateId::tenant)
    }

    /// The aggregate id without its tenant (`tenant:local…` → `local…`; the stored
    /// id as it is when it does not parse).
    pub fn local_id(&self) -> &str {
        self.id
            .as_ref()
            .map_or(self.stored.aggregate_id.as_str(), AggregateId::local)
    }

    /// When the event was recorded, to the microsecond (what read models store).
    pub fn at(&self) -> DateTime<Utc> {
        self.stored.recorded_at.trunc_subsecs(6)
    }

    /// `(from, to)` status names when the event moves a lifecycle status.
    pub fn status_change(&self) -> Option<(Option<String>, String)> {
        fn names<S: Serialize>(change: Option<(Option<S>, S)>) -> Option<(Option<String>, String)> {
            change.map(|(from, to)| (from.map(|s| name(&s)), name(&to)))
        }
        match &self.event {
            Decoded::Mapping(e) => names(e.status_change()),
            Decoded::Incident(e) => names(e.status_change()),
            Decoded::Promotion(e) => names(e.status_change()),
            Decoded::Deployment(e) => names(e.status_change()),
            Decoded::Pipeline(e) => names(e.status_change()),
            Decoded::Canonical(CanonicalEvent::Deleted { from, .. }) => {
                Some((Some(name(from)), name(&CanonicalStatus::Deleted)))
            }
            Decoded::Environment(EnvironmentEvent::Deactivated { from, .. }) => {
                Some((Some(name(from)), name(&EnvironmentStatus::Deactivated)))
            }
            Decoded::Environment(EnvironmentEvent::Reactivated { from }) => {
                Some((Some(name(from)), name(&EnvironmentStatus::Active)))
            }
            _ => None,
        }
    }
}

/// The serde name of a unit enum value (`MappingStatus::Linked` → `linked`).
pub fn name<S: Serialize>(value: &S) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}
