//! What the service tells the outside world about its events: the NATS JetStream
//! feed ([`nats`]).

pub mod nats;
