//! Fake servers on loopback that speak the real APIs of n8n and GitHub.

pub mod github;
pub mod n8n;
