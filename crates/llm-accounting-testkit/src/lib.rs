//! Test support shared by llm-accounting's crates (not published; a dev-dependency only).
//!
//! - [`services`]: skip or require. A test that cannot reach a service it needs (a database
//!   server, moto, drongo) says so loudly on stderr and skips, or fails when
//!   `LLM_ACCOUNTING_REQUIRE_SERVICES=1` (as in CI).
//! - [`kms`]: an [`EncryptionContext`](llm_accounting_core::EncryptionContext) for provider
//!   tests ([`ctx`]), an error's cause chain, small retry limits, the standard layers with
//!   their counters ([`layered`]), the conformance suite through them, a closed port.
//! - `database` (features `sqlite`, `postgres`, `mysql`): `TestDatabase`, a throwaway
//!   database on each backend.
//! - `cli` and `cloud` (feature `cli`): runs of the `llm-accounting` binary in a temporary
//!   environment, and the round trip every cloud provider's CLI test makes.
//!
//! A crate's `sqlite`, `postgres` and `mysql` features turn on the testkit's of the same name,
//! so that `Backend::all()` lists what that crate was built with:
//!
//! ```toml
//! [features]
//! postgres = ["sea-orm/sqlx-postgres", "llm-accounting-testkit/postgres"]
//!
//! [dev-dependencies]
//! llm-accounting-testkit.workspace = true
//! ```

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod cloud;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod database;
pub mod kms;
pub mod services;

#[cfg(feature = "cli")]
pub use cli::{Env, Run, fail_fast};
#[cfg(feature = "cli")]
pub use cloud::{CloudHooks, RoundTrip, assert_key_id_required, cloud_env};
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use database::{Backend, TestDatabase};
pub use kms::{
    assert_unavailable, closed_port_url, conformance_through_layers, ctx, error_chain, layered,
    quick_layers,
};
pub use services::{drongo_url, moto_url, services_required, skip_or_fail};
