//! One integration-test binary (link once, run everything). Store tests run against
//! both backends: SQLite in a temp file and PostgreSQL at 127.0.0.1:5432 (override
//! with `WORKFLOWOPS_TEST_PG_URL`), each test in a fresh database.

mod api;
mod browser;
mod cli;
mod config_models;
mod conformance;
mod console;
mod console_audit;
mod deployments;
mod digest;
mod fakes;
mod gap;
mod git;
mod invariants;
mod n8n;
mod nats;
mod notifications;
mod props;
mod reactors;
mod read_models;
mod rebuild_live;
mod scenarios;
mod schedulers;
mod support;
mod sync;
mod webhooks;
