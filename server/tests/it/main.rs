//! kepu-server integration tests, one binary. Every case that touches the database runs
//! against SQLite (temp dir) and PostgreSQL (a fresh database per test, from
//! `KEPU_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`) through
//! `support::on_both_databases!`, as `<file>::sqlite::<case>` and `<file>::postgres::<case>`.

mod chaos;
mod compat;
mod demo;
mod deploy;
mod edge;
mod fleet;
mod fleet_browser;
mod hostile_payloads;
mod hostile_web;
mod http_api;
mod hub;
mod kill9;
mod live;
mod live_browser;
mod many_devices;
mod nodes;
mod projections_match_rules;
mod reconnect;
mod records_writes;
mod reports;
mod roles;
mod samod_client;
mod store_suite;
mod stored_rows;
mod support;
mod sync_client;
mod sync_e2e;
mod web_login;
mod world;
