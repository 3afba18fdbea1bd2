//! The conformance suite of [`UsageStore`]: every implementation's tests call [`run`] (or the
//! single checks) on a fresh, empty store. Panics on the first failure.
//!
//! The checks live by behaviour: events ([`events_round_trip`], [`purge`]), time series
//! ([`series_per_period`]), limits
//! ([`limits_round_trip`], [`every_scope_and_kind`], [`exemptions_by_precedence`]), windows
//! ([`fixed_windows_reset`], [`rolling_window_across_boundary`],
//! [`rolling_months_from_the_first`]), reservations ([`reservations_hold_commit_release`]) and
//! load ([`racing_reservations_never_overshoot`], [`large_batches`]).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::Arc;

use crate::UsageStore;

mod events;
mod limits;
mod load;
mod reservations;
mod series;
mod support;
mod windows;

pub use events::{events_round_trip, purge};
pub use limits::{every_scope_and_kind, exemptions_by_precedence, limits_round_trip};
pub use load::{large_batches, racing_reservations_never_overshoot};
pub use reservations::{commits_together, reservations_hold_commit_release, reserved_together};
pub use series::series_per_period;
pub use windows::{
    fixed_windows_reset, rolling_months_from_the_first, rolling_window_across_boundary,
};

/// Every check, in order, on one empty store.
pub async fn run(store: Arc<dyn UsageStore>) {
    events_round_trip(&*store).await;
    series_per_period(&*store).await;
    limits_round_trip(&*store).await;
    every_scope_and_kind(&*store).await;
    fixed_windows_reset(&*store).await;
    rolling_window_across_boundary(&*store).await;
    exemptions_by_precedence(&*store).await;
    rolling_months_from_the_first(&*store).await;
    reservations_hold_commit_release(&*store).await;
    commits_together(&*store).await;
    reserved_together(&*store).await;
    racing_reservations_never_overshoot(Arc::clone(&store), 40).await;
    large_batches(&*store).await;
    purge(&*store).await;
}
