//! [`MemoryUsageStore`]: the [`UsageStore`] in memory, for tests and single processes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use llm_accounting_core::{Error, Result};
use uuid::Uuid;

use crate::store::{ReservationRecord, ReserveOutcome, StatsQuery, StatsRow, rank};
use crate::{
    Amounts, GroupBy, Limit, NewLimit, QuotaDecision, QuotaRequest, Scope, Usage, UsageEvent,
    UsageStore, check_limit,
};

#[derive(Debug, Default)]
struct State {
    events: Vec<UsageEvent>,
    limits: Vec<Limit>,
    reservations: HashMap<Uuid, ReservationRecord>,
    next_id: i64,
}

/// Events, limits and reservations in memory; one lock makes reservations atomic.
#[derive(Debug, Default)]
pub struct MemoryUsageStore {
    state: Mutex<State>,
}

impl MemoryUsageStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn usage(
        &self,
        scope: &Scope,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Usage {
        let mut u = Usage::default();
        for e in &self.events {
            if e.at >= since && e.at < until && scope.matches(&Scope::of_event(e)) {
                u.amounts = u.amounts.plus(Amounts::of_event(e));
                u.oldest = Some(u.oldest.map_or(e.at, |o| o.min(e.at)));
            }
        }
        for r in self.reservations.values() {
            if r.expires_at > now && scope.matches(&r.scope) {
                u.amounts = u.amounts.plus(r.amounts);
            }
        }
        u
    }

    fn decide(&self, request: &QuotaRequest, now: DateTime<Utc>) -> QuotaDecision {
        let asked = request.amounts();
        for limit in crate::governing(&self.limits, &request.scope) {
            let (since, until) = limit.window.bounds(now);
            let usage = self.usage(&limit.scope, since, until, now);
            if let Some(d) = check_limit(limit, &usage, &asked, now) {
                return QuotaDecision::Denied(Box::new(d));
            }
        }
        QuotaDecision::Allowed
    }
}

fn group_of(e: &UsageEvent, by: GroupBy) -> Option<String> {
    match by {
        GroupBy::Nothing => None,
        GroupBy::Model => Some(e.model.clone()),
        GroupBy::Service => e.service.clone(),
        GroupBy::User => e.user.clone(),
        GroupBy::Project => e.project.clone(),
        GroupBy::Caller => e.caller.clone(),
        GroupBy::Key => e
            .key
            .as_ref()
            .map(|k| format!("{} v{}", k.identity, k.version)),
    }
}

#[async_trait]
impl UsageStore for MemoryUsageStore {
    async fn insert_events(&self, events: &[UsageEvent]) -> Result<()> {
        for e in events {
            e.validate()?;
        }
        self.state().events.extend_from_slice(events);
        Ok(())
    }

    async fn add_limit(&self, limit: &NewLimit) -> Result<Limit> {
        limit.validate()?;
        let mut s = self.state();
        s.next_id += 1;
        let l = Limit {
            id: s.next_id,
            scope: limit.scope.clone(),
            kind: limit.kind,
            max: limit.max,
            window: limit.window,
            created_at: Utc::now(),
        };
        s.limits.push(l.clone());
        Ok(l)
    }

    async fn limits(&self) -> Result<Vec<Limit>> {
        Ok(self.state().limits.clone())
    }

    async fn delete_limit(&self, id: i64) -> Result<bool> {
        let mut s = self.state();
        let before = s.limits.len();
        s.limits.retain(|l| l.id != id);
        Ok(s.limits.len() != before)
    }

    async fn usage(
        &self,
        scope: &Scope,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Usage> {
        Ok(self.state().usage(scope, since, until, now))
    }

    async fn check(&self, request: &QuotaRequest, now: DateTime<Utc>) -> Result<QuotaDecision> {
        Ok(self.state().decide(request, now))
    }

    async fn reserve(
        &self,
        request: &QuotaRequest,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<ReserveOutcome> {
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| Error::invalid("reservation ttl", "too long"))?;
        let mut s = self.state();
        s.reservations.retain(|_, r| r.expires_at > now);
        if let QuotaDecision::Denied(d) = s.decide(request, now) {
            return Ok(ReserveOutcome::Denied(d));
        }
        let r = ReservationRecord {
            id: Uuid::new_v4(),
            scope: request.scope.clone(),
            amounts: request.amounts(),
            created_at: now,
            expires_at: now + ttl,
        };
        s.reservations.insert(r.id, r.clone());
        Ok(ReserveOutcome::Reserved(Box::new(r)))
    }

    async fn commit(&self, reservation: Uuid, event: &UsageEvent) -> Result<()> {
        event.validate()?;
        let mut s = self.state();
        s.reservations.remove(&reservation);
        s.events.push(event.clone());
        Ok(())
    }

    async fn release(&self, reservation: Uuid) -> Result<bool> {
        Ok(self.state().reservations.remove(&reservation).is_some())
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Vec<StatsRow>> {
        let s = self.state();
        let mut groups: HashMap<Option<String>, StatsRow> = HashMap::new();
        for e in &s.events {
            if query.since.is_some_and(|t| e.at < t) || query.until.is_some_and(|t| e.at >= t) {
                continue;
            }
            let g = group_of(e, query.by);
            let row = groups.entry(g.clone()).or_insert_with(|| StatsRow {
                group: g,
                requests: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
                reasoning_tokens: 0,
                cost: crate::Money::ZERO,
            });
            row.requests += 1;
            row.prompt_tokens += e.prompt_tokens;
            row.completion_tokens += e.completion_tokens;
            row.cached_tokens += e.cached_tokens;
            row.reasoning_tokens += e.reasoning_tokens;
            row.cost = row.cost.saturating_add(e.cost);
        }
        let mut rows: Vec<StatsRow> = groups.into_values().collect();
        rank(&mut rows, query.top);
        Ok(rows)
    }

    async fn tail(&self, n: usize) -> Result<Vec<UsageEvent>> {
        let s = self.state();
        let mut events = s.events.clone();
        // Newest first; of equal times, the one added last first.
        events.reverse();
        events.sort_by_key(|e| std::cmp::Reverse(e.at));
        events.truncate(n);
        Ok(events)
    }

    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut s = self.state();
        let n = s.events.len();
        s.events.retain(|e| e.at >= before);
        Ok((n - s.events.len()) as u64)
    }
}
