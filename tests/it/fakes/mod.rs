//! Fake servers on loopback that speak the real APIs of n8n and GitHub, and a
//! webhook receiver.

pub mod github;
pub mod n8n;
pub mod receiver;
