//! The storage trait of usage accounting, and what it reads and writes.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use llm_accounting_core::Result;
use serde::Serialize;
use uuid::Uuid;

use crate::{Amounts, Denial, Limit, NewLimit, QuotaDecision, QuotaRequest, Scope, UsageEvent};

/// Held budget: what [`UsageStore::reserve`] set aside for a call until it is committed
/// (with the actual usage) or released. It lapses by itself at `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRecord {
    /// Its id.
    pub id: Uuid,
    /// The call's attributes.
    pub scope: Scope,
    /// What is held.
    pub amounts: Amounts,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops counting if neither committed nor released.
    pub expires_at: DateTime<Utc>,
}

/// The answer of [`UsageStore::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every applicable limit had room; the budget is held.
    Reserved(Box<ReservationRecord>),
    /// A limit had no room; nothing was held.
    Denied(Box<Denial>),
}

/// How to group statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One row for everything.
    Nothing,
    /// Per model.
    Model,
    /// Per service.
    Service,
    /// Per user.
    User,
    /// Per project.
    Project,
    /// Per caller.
    Caller,
    /// Per stored key (identity and version).
    Key,
}

impl GroupBy {
    /// Every grouping, [`GroupBy::Nothing`] first.
    pub const ALL: [GroupBy; 7] = [
        GroupBy::Nothing,
        GroupBy::Model,
        GroupBy::Service,
        GroupBy::User,
        GroupBy::Project,
        GroupBy::Caller,
        GroupBy::Key,
    ];

    /// Its name, as `--by` spells it (`nothing` for [`GroupBy::Nothing`]).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Nothing => "nothing",
            GroupBy::Model => "model",
            GroupBy::Service => "service",
            GroupBy::User => "user",
            GroupBy::Project => "project",
            GroupBy::Caller => "caller",
            GroupBy::Key => "key",
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = llm_accounting_core::Error;

    fn from_str(s: &str) -> Result<Self> {
        GroupBy::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| {
                llm_accounting_core::Error::invalid(
                    "by",
                    format!(
                        "{s:?} is not one of nothing, model, service, user, project, caller, key"
                    ),
                )
            })
    }
}

/// A statistics query: events with `since <= at < until`, grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    /// Start (inclusive); `None`: from the first event.
    pub since: Option<DateTime<Utc>>,
    /// End (exclusive); `None`: to the last event.
    pub until: Option<DateTime<Utc>>,
    /// Grouping.
    pub by: GroupBy,
    /// Only the `top` groups with the highest cost (then most requests), if set.
    pub top: Option<usize>,
}

/// One group's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsRow {
    /// The group's value (`None`: events without one, or the single row of [`GroupBy::Nothing`]).
    pub group: Option<String>,
    /// Calls.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached tokens.
    pub cached_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// Cost.
    pub cost: crate::Money,
}

impl StatsRow {
    /// Adds `other`'s counts and cost to these (saturating), whatever its group.
    pub fn add(&mut self, other: &StatsRow) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.cost = self.cost.saturating_add(other.cost);
    }
}

/// Where usage events, limits and reservations live. Implemented in memory
/// ([`crate::MemoryUsageStore`]) and by the sea-orm store on SQLite, PostgreSQL and
/// MySQL/MariaDB; every implementation runs the same conformance suite (feature
/// `conformance`).
#[async_trait]
pub trait UsageStore: Send + Sync + Debug {
    /// Appends events, all or none (one transaction; chunked under the database's parameter
    /// limit).
    async fn insert_events(&self, events: &[UsageEvent]) -> Result<()>;

    /// Creates a limit.
    async fn add_limit(&self, limit: &NewLimit) -> Result<Limit>;

    /// Every limit, by id.
    async fn limits(&self) -> Result<Vec<Limit>>;

    /// Deletes a limit; whether it existed.
    async fn delete_limit(&self, id: i64) -> Result<bool>;

    /// What events and live reservations inside `scope` come to with `since <= at < until`
    /// (reservations: those alive at `now`).
    async fn usage(
        &self,
        scope: &Scope,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<crate::Usage>;

    /// Checks every limit that applies to `request` at `now` without holding anything.
    async fn check(&self, request: &QuotaRequest, now: DateTime<Utc>) -> Result<QuotaDecision>;

    /// Checks every limit that applies and, only if all have room, holds the request's
    /// amounts for `ttl`: atomically, so that concurrent reservations (other tasks, other
    /// processes) never together pass a limit.
    async fn reserve(
        &self,
        request: &QuotaRequest,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<ReserveOutcome>;

    /// Replaces a reservation by the actual usage, in one transaction (an already lapsed or
    /// released reservation only adds the event).
    async fn commit(&self, reservation: Uuid, event: &UsageEvent) -> Result<()>;

    /// Decides several requests in order, each as [`UsageStore::reserve`] does and seeing
    /// the ones granted before it; stores that can ([`UsageStore::batches_commits`]) do it in
    /// one transaction. The default reserves one by one (stopping at the first error).
    async fn reserve_many(
        &self,
        requests: &[QuotaRequest],
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReserveOutcome>> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(self.reserve(request, ttl, now).await?);
        }
        Ok(out)
    }

    /// Commits several reservations, each as [`UsageStore::commit`] does; stores that can
    /// ([`UsageStore::batches_commits`]) do it in one transaction, all or nothing. The
    /// default checks every event, then commits one by one.
    async fn commit_many(&self, commits: &[(Uuid, UsageEvent)]) -> Result<()> {
        for (_, event) in commits {
            event.validate()?;
        }
        for (reservation, event) in commits {
            self.commit(*reservation, event).await?;
        }
        Ok(())
    }

    /// Whether [`UsageStore::reserve_many`] and [`UsageStore::commit_many`] work in one
    /// transaction (then [`crate::Accounting`] groups the reservations and the commits that
    /// arrive together).
    fn batches_commits(&self) -> bool {
        false
    }

    /// Drops a reservation; whether it was still held.
    async fn release(&self, reservation: Uuid) -> Result<bool>;

    /// Totals per group.
    async fn stats(&self, query: &StatsQuery) -> Result<Vec<StatsRow>>;

    /// Totals per period and group, in the order of [`crate::series::finish`]. The default
    /// sums each period with [`UsageStore::stats`] (one query per period); stores that keep
    /// rollups read them instead.
    async fn series(&self, query: &crate::SeriesQuery) -> Result<Vec<crate::SeriesRow>> {
        crate::series::summed_per_period(self, query).await
    }

    /// The last `n` events, newest first.
    async fn tail(&self, n: usize) -> Result<Vec<UsageEvent>>;

    /// Deletes events before `before`; how many.
    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// Sorts stats rows (highest cost, then most requests, then group) and keeps the top `n`.
pub fn rank(rows: &mut Vec<StatsRow>, top: Option<usize>) {
    rows.sort_by(|a, b| {
        b.cost
            .cmp(&a.cost)
            .then(b.requests.cmp(&a.requests))
            .then(a.group.cmp(&b.group))
    });
    if let Some(n) = top {
        rows.truncate(n);
    }
}

/// The limits among `limits` that decide `request`, in the order they are checked (see
/// [`crate::governing`]).
pub fn applicable<'a>(limits: &'a [Limit], request: &QuotaRequest) -> Vec<&'a Limit> {
    crate::governing(limits, &request.scope)
}
