//! sea-orm entities of the tables created by `llm-accounting-migration`.
//!
//! They mirror the migrations exactly; the repository converts them to and from the core's
//! [`KeyRecord`](llm_accounting_core::KeyRecord) and
//! [`VersionRecord`](llm_accounting_core::VersionRecord).

pub(crate) mod api_key;
pub(crate) mod api_key_audit;
pub(crate) mod api_key_version;
pub(crate) mod branch_key;
pub(crate) mod store_key;
