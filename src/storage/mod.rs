//! What the write side keeps beside the event log: sealed credentials
//! ([`secrets`]) and content-addressed payloads that retention may purge
//! ([`payloads`]; the log keeps only their digests).

pub mod payloads;
pub mod secrets;
