//! Test support shared by llm-accounting's crates (not published; a dev-dependency only).
//!
//! - [`services`]: skip or require. A test that cannot reach a service it needs (a database
//!   server, moto, drongo) says so loudly on stderr and skips, or fails when
//!   `LLM_ACCOUNTING_REQUIRE_SERVICES=1` (as in CI).
//! - [`kms`]: an [`EncryptionContext`](llm_accounting_core::EncryptionContext) for provider
//!   tests ([`ctx`]), an error's cause chain, small retry limits.

pub mod kms;
pub mod services;

pub use kms::{ctx, error_chain, quick_layers};
pub use services::{drongo_url, moto_url, services_required, skip_or_fail};
