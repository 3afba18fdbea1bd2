//! Conformance suites every provider, every repository and every audit log must pass (feature
//! `conformance`).
//!
//! Each suite is a plain async function that panics with a clear message on the first broken
//! rule, so a backend crate's test is one line:
//!
//! ```text
//! #[tokio::test]
//! async fn conformance() {
//!     let provider = MyProvider::new(/* ... */);
//!     llm_accounting_core::conformance::provider::run(&provider).await;
//! }
//! ```

pub mod audit;
mod batch;
pub mod branch;
mod fixtures;
pub mod provider;
pub mod repository;
