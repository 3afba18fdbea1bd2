//! Usage accounting for llm-accounting: what LLM calls used and cost, limits on it, and quota
//! checks that hold budget for calls in flight.
//!
//! - [`UsageEvent`]: one call's model, service, user, project, caller, session, tokens, exact
//!   cost ([`Money`], integer micro-dollars), execution time, and the stored key (and
//!   version) that served it.
//! - [`Limit`]: a [`Scope`] (global, or any combination of service, model, user, project,
//!   caller and key), a [`LimitKind`] (requests, input, output or total tokens, cost), a
//!   maximum and a [`Window`] (fixed UTC calendar windows or rolling).
//! - [`UsageStore`]: where events, limits and reservations live; [`MemoryUsageStore`] here,
//!   the sea-orm store for SQLite, PostgreSQL and MySQL/MariaDB in `llm-accounting-store`.
//!   [`UsageStore::reserve`] checks every applicable limit and holds the estimate atomically.
//! - [`UsageRecorder`]: events written in batches in the background, flushed by `shutdown`.
//! - [`LocalQuota`]: per-process counters synchronised with the store at an interval, for
//!   checks that never wait for a database.
//! - [`Accounting`]: a store, its recorder and the [`Enforcement`] mode together: quota
//!   checks, [`Reservation`]s committed with a call's [`CallUsage`], and quota-gated key
//!   hand-out ([`Accounting::get_key`], [`Accounting::get_keys`]) through a
//!   [`llm_accounting_core::SecureKeyManager`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> llm_accounting_core::Result<()> {
//! use std::time::Duration;
//! use chrono::Utc;
//! use llm_accounting_usage::*;
//!
//! let store = MemoryUsageStore::new();
//! store.add_limit(&NewLimit {
//!     scope: Scope { user: Some("alice".into()), ..Scope::global() },
//!     kind: LimitKind::Requests,
//!     max: 1,
//!     window: Window::fixed(WindowUnit::Day, 1)?,
//! }).await?;
//! let request = QuotaRequest::new("gpt-4o").user(Some("alice"));
//! let ReserveOutcome::Reserved(held) =
//!     store.reserve(&request, Duration::from_secs(60), Utc::now()).await?
//! else { panic!("the first call fits") };
//! let event = UsageEvent::new("gpt-4o", Utc::now()).user("alice").tokens(12, 30)
//!     .cost("0.0125".parse()?);
//! store.commit(held.id, &event).await?;
//! assert!(!store.check(&request, Utc::now()).await?.is_allowed());
//! # Ok(()) }
//! ```

mod accounting;
pub mod buckets;
#[cfg(feature = "conformance")]
pub mod conformance;
mod enforcement;
mod event;
mod groups;
mod limit;
mod local;
mod memory;
mod money;
mod quota;
mod recorder;
mod reservation;
pub mod series;
mod store;
#[cfg(feature = "clap")]
mod value_enum;
mod window;

pub use accounting::{Accounting, AccountingOptions};
pub use enforcement::Enforcement;
pub use event::{KeyRef, MAX_COST, MAX_FIELD_CHARS, MAX_TOKENS, UsageEvent};
pub use limit::{Amounts, Limit, LimitKind, NewLimit, Scope};
pub use local::{LocalQuota, LocalReservation};
pub use memory::MemoryUsageStore;
pub use money::{MICROS_PER_DOLLAR, Money};
pub use quota::{
    Denial, QuotaDecision, QuotaRequest, Usage, check_limit, counts_against, governing,
    needs_tokens, resets_at,
};
pub use recorder::{RecorderOptions, UsageRecorder};
pub use reservation::{CallUsage, GatedKey, Reservation};
pub use series::{Period, SeriesQuery, SeriesRow};
pub use store::{
    GroupBy, ReservationRecord, ReserveOutcome, StatsQuery, StatsRow, UsageStore, applicable, rank,
};
pub use window::{Window, WindowUnit};
