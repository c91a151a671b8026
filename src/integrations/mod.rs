//! What the service tells the outside world about its events: the NATS JetStream
//! feed ([`nats`]) and signed webhooks ([`webhooks`]).

pub mod nats;
pub mod notifications;
pub mod webhooks;
