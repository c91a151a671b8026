//! An event as projections see it: the stored envelope plus the typed domain event,
//! decoded once per batch for every projection.

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
use serde::Serialize;
use serde_json::Value;

use eventstore::{LogCursor, StoredEvent};

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
    pub stored: StoredEvent,
    pub event: Decoded,
    /// The stored aggregate id, parsed (`None` when it does not parse: the event is
    /// then [`Decoded::Undecodable`]).
    id: Option<AggregateId>,
}

fn decode<E: serde::de::DeserializeOwned>(payload: &Value, wrap: fn(E) -> Decoded) -> Decoded {
    match E::deserialize(payload) {
        Ok(event) => wrap(event),
        Err(error) => Decoded::Undecodable(error.to_string()),
    }
}

impl Envelope {
    pub fn new(stored: StoredEvent) -> Envelope {
        let id = match AggregateId::parse(stored.aggregate_id.as_str()) {
            Ok(id) => id,
            Err(error) => {
                return Envelope {
                    event: Decoded::Undecodable(format!("aggregate id: {error}")),
                    stored,
                    id: None,
                }
            }
        };
        let payload = &stored.payload;
        let event = match stored.aggregate_type.as_str() {
            t if t == Environment::TYPE => decode(payload, Decoded::Environment),
            t if t == CanonicalWorkflow::TYPE => decode(payload, Decoded::Canonical),
            t if t == WorkflowMapping::TYPE => decode(payload, Decoded::Mapping),
            t if t == DriftIncident::TYPE => decode(payload, Decoded::Incident),
            t if t == Promotion::TYPE => decode(payload, Decoded::Promotion),
            t if t == Deployment::TYPE => decode(payload, Decoded::Deployment),
            t if t == Pipeline::TYPE => decode(payload, Decoded::Pipeline),
            t if t == DriftPolicy::TYPE => decode(payload, Decoded::DriftPolicy),
            t if t == CredentialMap::TYPE => decode(payload, Decoded::CredentialMap),
            t if t == Webhook::TYPE => decode(payload, Decoded::Webhook),
            _ => Decoded::Other,
        };
        Envelope {
            stored,
            event,
            id: Some(id),
        }
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

    pub fn meta_str(&self, key: &str) -> Option<String> {
        self.stored
            .metadata
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn meta_bool(&self, key: &str) -> bool {
        self.stored
            .metadata
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
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
