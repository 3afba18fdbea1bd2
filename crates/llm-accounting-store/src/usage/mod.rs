//! [`SeaOrmUsageStore`]: the [`UsageStore`] of `llm-accounting-usage` over sea-orm, on SQLite,
//! PostgreSQL and MySQL/MariaDB (tables `usage_events`, `quota_limits`,
//! `quota_reservations`).
//!
//! Strict enforcement: [`UsageStore::reserve`] checks the limits that decide a call (see
//! [`llm_accounting_usage::governing`]) and inserts the reservation in one transaction that
//! no other reservation on the same limits can interleave with. SQLite: an `IMMEDIATE` transaction (the database's write lock, across
//! processes, taken before the first read). PostgreSQL and MySQL/MariaDB: `READ COMMITTED`,
//! and the applicable limits' rows locked (`SELECT ... FOR UPDATE`, in id order) before
//! usage is summed, so that every reservation committed before the lock was granted is seen.
//!
//! Layout: `columns.rs` describes each schema's tables as a column map (this project's and the
//! Python package's); `query.rs` builds the statements both share once over those maps with
//! sea-query, for the connection's backend; `own.rs` and `rows.rs` hold what only this
//! project's tables have (reservations, `quota_limits`), `python.rs` and `python_limits.rs`
//! what only the package's have (detection, its entries and `usage_limits`).

mod columns;
mod counters;
mod own;
mod python;
mod python_limits;
mod query;
mod rollups;
mod rows;

use columns::Schema;
pub use python::PYTHON_SCHEMA_HEAD;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::{
    Denial, Limit, NewLimit, QuotaDecision, QuotaRequest, ReservationRecord, ReserveOutcome, Scope,
    SeriesQuery, SeriesRow, StatsQuery, StatsRow, Usage, UsageEvent, UsageStore, check_limit,
    counts_against, governing,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use crate::error::from_db;
use crate::{SeaOrmKeyRepository, StoreOptions};

/// Usage events, limits and reservations in a relational database. Cloning is cheap: clones
/// share the pool.
#[derive(Clone)]
pub struct SeaOrmUsageStore {
    db: DatabaseConnection,
    schema: Schema,
    /// Whether decisions read usage counters (see `counters.rs`) rather than summing events:
    /// everywhere but the Python package's tables on MySQL/MariaDB, where nothing can hold
    /// back the package's writers while entries are counted.
    counters: bool,
    /// When lapsed reservations and old counters were last deleted (seconds since the epoch).
    pruned: Arc<AtomicI64>,
    /// SQLite: this process's writers queue here (first come, first served) instead of
    /// contending for the database's write lock, whose busy handler sleeps (up to 100 ms at
    /// a time) and serves waiters in no order.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for SeaOrmUsageStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeaOrmUsageStore")
            .field(
                "backend",
                &self.db.get_database_backend().as_str().to_ascii_lowercase(),
            )
            .field("python_schema", &(self.schema == Schema::Python))
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl SeaOrmKeyRepository {
    /// The usage store in the same database, sharing this repository's pool. When the
    /// database holds the Python llm-accounting package's tables (at alembic revision
    /// [`PYTHON_SCHEMA_HEAD`]), usage and limits are read from and written to those.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when it holds that package's tables at another revision.
    pub async fn usage_store(&self) -> Result<SeaOrmUsageStore> {
        let db = self.connection().clone();
        let backend = db.get_database_backend();
        let schema = python::detect(&db, backend).await?;
        let counters = !(schema == Schema::Python && backend == DbBackend::MySql);
        match schema {
            Schema::Python if counters => counters::start(&db, backend, schema.events()).await?,
            Schema::Python => {}
            Schema::Own => {
                if rollups::start(&db, backend).await? {
                    tracing::info!("usage rollups built for the events written before them");
                }
            }
        }
        Ok(SeaOrmUsageStore {
            db,
            schema,
            counters,
            pruned: Arc::new(AtomicI64::new(0)),
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
        })
    }
}

impl SeaOrmUsageStore {
    /// On SQLite, this process's turn to write (see `write_gate`); nothing elsewhere.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.backend() == DbBackend::Sqlite {
            Some(self.write_gate.lock().await)
        } else {
            None
        }
    }

    /// Opens the database at `url` (as [`SeaOrmKeyRepository::connect`], migrations applied).
    ///
    /// # Errors
    ///
    /// As [`SeaOrmKeyRepository::connect`].
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        SeaOrmKeyRepository::connect(url, options)
            .await?
            .usage_store()
            .await
    }

    /// Whether usage and limits live in the Python llm-accounting package's tables.
    pub fn is_python_schema(&self) -> bool {
        self.schema == Schema::Python
    }

    /// Every limit. With the Python package's tables: those of its `usage_limits`, then
    /// those it cannot hold, kept in `quota_limits` and shown with negative ids.
    async fn all_limits(&self, db: &impl sea_orm::ConnectionTrait) -> Result<Vec<Limit>> {
        match self.schema {
            Schema::Own => own::limits(db, self.backend()).await,
            Schema::Python => {
                let mut all = python_limits::limits(db, self.backend()).await?;
                all.extend(
                    own::limits(db, self.backend())
                        .await?
                        .into_iter()
                        .map(|l| Limit { id: -l.id, ..l }),
                );
                Ok(all)
            }
        }
    }

    /// Locks the rows of limits `ids` (the package's table first, then ours, each in id
    /// order, so that transactions lock in one order); the ids that still exist.
    async fn lock(&self, db: &impl sea_orm::ConnectionTrait, ids: &[i64]) -> Result<Vec<i64>> {
        match self.schema {
            Schema::Own => own::lock_limits(db, self.backend(), ids).await,
            Schema::Python => {
                let (ours, theirs): (Vec<i64>, Vec<i64>) = ids.iter().partition(|id| **id < 0);
                let mut still = Vec::with_capacity(ids.len());
                if !theirs.is_empty() {
                    still.extend(python_limits::lock_limits(db, self.backend(), &theirs).await?);
                }
                if !ours.is_empty() {
                    let ours: Vec<i64> = ours.iter().map(|id| -id).collect();
                    let locked = own::lock_limits(db, self.backend(), &ours).await?;
                    still.extend(locked.into_iter().map(|id| -id));
                }
                Ok(still)
            }
        }
    }

    async fn usage_in(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        scope: &Scope,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Usage> {
        let backend = self.backend();
        let events = self.schema.events();
        let u = query::usage(db, backend, events, scope, since, until).await?;
        let held = own::held(db, backend, scope, now).await?;
        Ok(Usage {
            amounts: u.amounts.plus(held),
            oldest: u.oldest,
        })
    }

    async fn write_events(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        events: &[UsageEvent],
    ) -> Result<()> {
        match self.schema {
            Schema::Own => own::insert_events(db, self.backend(), events).await,
            Schema::Python => python::insert_events(db, self.backend(), events).await,
        }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// A transaction that reservations serialise on (see the module documentation).
    async fn begin(&self, operation: &'static str) -> Result<DatabaseTransaction> {
        let options = match self.backend() {
            DbBackend::Sqlite => TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            },
            _ => TransactionOptions {
                isolation_level: Some(IsolationLevel::ReadCommitted),
                ..TransactionOptions::default()
            },
        };
        self.db
            .begin_with_options(options)
            .await
            .map_err(|e| from_db(operation, e))
    }

    /// Checks the applicable limits inside `txn`, their rows locked first (folding the Python
    /// package's new entries into the counters on the way).
    async fn decide(
        &self,
        txn: &DatabaseTransaction,
        request: &QuotaRequest,
        now: DateTime<Utc>,
    ) -> Result<Option<Denial>> {
        let backend = self.backend();
        let all = self.all_limits(txn).await?;
        let mut limits = governing(&all, &request.scope);
        if limits.is_empty() {
            return Ok(None);
        }
        if backend != DbBackend::Sqlite {
            let ids: Vec<i64> = limits.iter().map(|l| l.id).collect();
            let still = self.lock(txn, &ids).await?;
            // A limit deleted meanwhile no longer applies. (An exemption deleted meanwhile
            // lets through a call the limits after it would have refused: no worse than the
            // call having come just before the deletion.)
            limits.retain(|l| still.contains(&l.id));
        }
        if self.counters && self.schema == Schema::Python {
            counters::fold(txn, backend, self.schema.events(), &all).await?;
        }
        let asked = request.amounts();
        for limit in limits {
            let usage = self.limit_usage(txn, limit, now).await?;
            if let Some(d) = check_limit(limit, &usage, &asked, now) {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Usage counted against `limit` at `now`, events and live reservations, inside the
    /// limit's serialised section.
    async fn limit_usage(
        &self,
        txn: &DatabaseTransaction,
        limit: &Limit,
        now: DateTime<Utc>,
    ) -> Result<Usage> {
        if !self.counters || now - limit.created_at < counters::SETTLE {
            let (since, until) = limit.window.bounds(now);
            return self.usage_in(txn, &limit.scope, since, until, now).await;
        }
        let backend = self.backend();
        let u = counters::usage(txn, backend, self.schema.events(), limit, now, true).await?;
        let held = own::held(txn, backend, &limit.scope, now).await?;
        Ok(Usage {
            amounts: u.amounts.plus(held),
            oldest: u.oldest,
        })
    }

    /// Locks the limits that `events` count against (PostgreSQL, MySQL/MariaDB; SQLite's
    /// transaction is serialised already) and returns every limit, for the counters.
    async fn lock_for(
        &self,
        txn: &DatabaseTransaction,
        events: &[UsageEvent],
    ) -> Result<Vec<Limit>> {
        let all = self.all_limits(txn).await?;
        if self.backend() != DbBackend::Sqlite {
            let scopes: Vec<Scope> = events.iter().map(Scope::of_event).collect();
            let ids: Vec<i64> = all
                .iter()
                .filter(|l| scopes.iter().any(|s| l.scope.matches(s)))
                .map(|l| l.id)
                .collect();
            if !ids.is_empty() {
                self.lock(txn, &ids).await?;
            }
        }
        Ok(all)
    }

    /// Writes `events` and, in this project's tables, adds them to the counters (the
    /// Python package's entries are counted by the next decision's fold).
    async fn write_counted(&self, txn: &DatabaseTransaction, events: &[UsageEvent]) -> Result<()> {
        if self.schema == Schema::Python {
            return self.write_events(txn, events).await;
        }
        let limits = self.lock_for(txn, events).await?;
        self.write_events(txn, events).await?;
        counters::add(txn, self.backend(), &limits, events).await?;
        rollups::add(txn, self.backend(), events).await
    }

    /// Deletes lapsed reservations and the counters no decision reads any more, at most
    /// every ten seconds per store. Lapsed reservations count for nothing already, and old
    /// counters are never read: this is housekeeping, in its own transaction so that it
    /// takes no lock inside a reservation's.
    async fn housekeeping(&self, now: DateTime<Utc>) -> Result<()> {
        let last = self.pruned.load(Ordering::Relaxed);
        if now.timestamp() - last < 10 {
            return Ok(());
        }
        self.pruned.store(now.timestamp(), Ordering::Relaxed);
        let _turn = self.write_turn().await;
        own::delete_lapsed(&self.db, self.backend(), now).await?;
        if !self.counters {
            return Ok(());
        }
        let txn = self.begin("prune usage counters").await?;
        let limits = self.all_limits(&txn).await?;
        counters::prune(&txn, self.backend(), &limits, now).await?;
        commit(txn, "prune usage counters").await
    }
}

async fn commit(txn: DatabaseTransaction, operation: &'static str) -> Result<()> {
    txn.commit().await.map_err(|e| from_db(operation, e))
}

#[async_trait]
impl UsageStore for SeaOrmUsageStore {
    async fn insert_events(&self, events: &[UsageEvent]) -> Result<()> {
        for e in events {
            e.validate()?;
        }
        if events.is_empty() {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        retrying(|| async {
            let txn = self.begin("write usage events").await?;
            self.write_counted(&txn, events).await?;
            commit(txn, "write usage events").await
        })
        .await
    }

    async fn add_limit(&self, limit: &NewLimit) -> Result<Limit> {
        limit.validate()?;
        let txn = self.begin("add a limit").await?;
        let created = match self.schema {
            Schema::Python if python_limits::cannot_hold(limit).is_none() => {
                python_limits::insert_limit(&txn, self.backend(), limit).await?
            }
            Schema::Python => {
                let l = own::insert_limit(&txn, self.backend(), limit).await?;
                Limit { id: -l.id, ..l }
            }
            Schema::Own => own::insert_limit(&txn, self.backend(), limit).await?,
        };
        commit(txn, "add a limit").await?;
        Ok(created)
    }

    async fn limits(&self) -> Result<Vec<Limit>> {
        self.all_limits(&self.db).await
    }

    async fn delete_limit(&self, id: i64) -> Result<bool> {
        let deleted = match self.schema {
            Schema::Python if id < 0 => own::delete_limit(&self.db, self.backend(), -id).await,
            Schema::Python => python_limits::delete_limit(&self.db, self.backend(), id).await,
            Schema::Own => own::delete_limit(&self.db, self.backend(), id).await,
        }?;
        if deleted && self.counters {
            counters::forget_limit(&self.db, self.backend(), id).await?;
        }
        Ok(deleted)
    }

    async fn usage(
        &self,
        scope: &Scope,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Usage> {
        self.usage_in(&self.db, scope, since, until, now).await
    }

    async fn check(&self, request: &QuotaRequest, now: DateTime<Utc>) -> Result<QuotaDecision> {
        // As a reservation decides (counters built or folded on the way are kept), without
        // holding anything.
        let _turn = self.write_turn().await;
        let denial = retrying(|| async {
            let txn = self.begin("check quota").await?;
            let denial = self.decide(&txn, request, now).await?;
            commit(txn, "check quota").await?;
            Ok(denial)
        })
        .await?;
        Ok(denial.map_or(QuotaDecision::Allowed, |d| {
            QuotaDecision::Denied(Box::new(d))
        }))
    }

    async fn reserve(
        &self,
        request: &QuotaRequest,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<ReserveOutcome> {
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| Error::invalid("reservation ttl", "too long"))?;
        if let Err(e) = self.housekeeping(now).await {
            tracing::debug!(error = %e, "could not delete lapsed reservations and old counters");
        }
        let _turn = self.write_turn().await;
        retrying(|| self.reserve_once(request, ttl, now)).await
    }

    async fn commit(&self, reservation: Uuid, event: &UsageEvent) -> Result<()> {
        event.validate()?;
        let _turn = self.write_turn().await;
        retrying(|| self.commit_once(reservation, event)).await
    }

    async fn reserve_many(
        &self,
        requests: &[QuotaRequest],
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReserveOutcome>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| Error::invalid("reservation ttl", "too long"))?;
        if let Err(e) = self.housekeeping(now).await {
            tracing::debug!(error = %e, "could not delete lapsed reservations and old counters");
        }
        let _turn = self.write_turn().await;
        retrying(|| self.reserve_many_once(requests, ttl, now)).await
    }

    async fn commit_many(&self, commits: &[(Uuid, UsageEvent)]) -> Result<()> {
        for (_, event) in commits {
            event.validate()?;
        }
        if commits.is_empty() {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        retrying(|| self.commit_many_once(commits)).await
    }

    fn batches_commits(&self) -> bool {
        true
    }

    async fn release(&self, reservation: Uuid) -> Result<bool> {
        let _turn = self.write_turn().await;
        retrying(|| own::delete_reservation(&self.db, self.backend(), reservation)).await
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Vec<StatsRow>> {
        match self.schema {
            Schema::Own => rollups::stats(&self.db, self.backend(), query).await,
            Schema::Python => query::stats(&self.db, self.backend(), &columns::PYTHON, query).await,
        }
    }

    async fn series(&self, query: &SeriesQuery) -> Result<Vec<SeriesRow>> {
        match self.schema {
            Schema::Own => rollups::series(&self.db, self.backend(), query).await,
            // No rollups: one summing query per period.
            Schema::Python => llm_accounting_usage::series::summed_per_period(self, query).await,
        }
    }

    async fn tail(&self, n: usize) -> Result<Vec<UsageEvent>> {
        query::tail(&self.db, self.backend(), self.schema.events(), n).await
    }

    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64> {
        match self.schema {
            Schema::Own => {
                // The counters of buckets that held purged events go with them, in the same
                // transaction; they are built again from what is left when needed.
                let txn = self.begin("purge usage events").await?;
                let n = own::purge_before(&txn, self.backend(), before).await?;
                counters::forget_before(&txn, self.backend(), before).await?;
                rollups::purged(&txn, self.backend(), before).await?;
                commit(txn, "purge usage events").await?;
                Ok(n)
            }
            Schema::Python => Err(Error::invalid(
                "purge",
                "refused: the accounting database holds the Python llm-accounting package's \
                 tables, whose entries this project only appends to",
            )),
        }
    }
}

/// Tries of a reservation or commit that lost a deadlock or found the database busy.
const ATTEMPTS: u32 = 20;

/// Runs `op` again (after a short, growing pause) while it fails with a retryable error: a
/// deadlock victim or a busy database rolled its transaction back, so trying again is safe.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 5)).await;
            }
            other => return other,
        }
    }
}

impl SeaOrmUsageStore {
    async fn reserve_once(
        &self,
        request: &QuotaRequest,
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<ReserveOutcome> {
        let txn = self.begin("reserve quota").await?;
        if self.backend() == DbBackend::Postgres {
            // A reservation need not survive a crash of the server: one lost with it counts
            // for nothing, as if it had lapsed (the call's usage still counts when committed).
            // Not waiting for the WAL flush halves the disk flushes of a gated call.
            txn.execute_unprepared("SET LOCAL synchronous_commit = off")
                .await
                .map_err(|e| from_db("reserve quota", e))?;
        }
        if let Some(d) = self.decide(&txn, request, now).await? {
            commit(txn, "reserve quota").await?;
            return Ok(ReserveOutcome::Denied(Box::new(d)));
        }
        let record = ReservationRecord {
            id: Uuid::new_v4(),
            scope: request.scope.clone(),
            amounts: request.amounts(),
            created_at: now,
            expires_at: now + ttl,
        };
        own::insert_reservation(&txn, self.backend(), &record).await?;
        commit(txn, "reserve quota").await?;
        Ok(ReserveOutcome::Reserved(Box::new(record)))
    }

    /// [`UsageStore::reserve_many`] in one transaction: the limits are read and locked once,
    /// each limit's usage is read once, and the requests are decided in order, each seeing
    /// the ones granted before it (their amounts added to the usage read).
    async fn reserve_many_once(
        &self,
        requests: &[QuotaRequest],
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReserveOutcome>> {
        let backend = self.backend();
        let txn = self.begin("reserve quota").await?;
        if backend == DbBackend::Postgres {
            // As in `reserve_once`: a reservation need not survive a crash of the server.
            txn.execute_unprepared("SET LOCAL synchronous_commit = off")
                .await
                .map_err(|e| from_db("reserve quota", e))?;
        }
        let all = self.all_limits(&txn).await?;
        let per: Vec<Vec<&Limit>> = requests.iter().map(|r| governing(&all, &r.scope)).collect();
        let mut ids: Vec<i64> = per.iter().flatten().map(|l| l.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let still = if backend != DbBackend::Sqlite && !ids.is_empty() {
            self.lock(&txn, &ids).await?
        } else {
            ids
        };
        if self.counters && self.schema == Schema::Python && !still.is_empty() {
            counters::fold(&txn, backend, self.schema.events(), &all).await?;
        }
        let mut usage: HashMap<i64, (&Limit, Usage)> = HashMap::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        for (request, limits) in requests.iter().zip(&per) {
            let asked = request.amounts();
            let mut denial = None;
            for limit in limits.iter().filter(|l| still.contains(&l.id)) {
                let u = match usage.entry(limit.id) {
                    std::collections::hash_map::Entry::Occupied(e) => &e.into_mut().1,
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let u = self.limit_usage(&txn, limit, now).await?;
                        &e.insert((limit, u)).1
                    }
                };
                if let Some(d) = check_limit(limit, u, &asked, now) {
                    denial = Some(d);
                    break;
                }
            }
            if let Some(d) = denial {
                outcomes.push(ReserveOutcome::Denied(Box::new(d)));
                continue;
            }
            let record = ReservationRecord {
                id: Uuid::new_v4(),
                scope: request.scope.clone(),
                amounts: asked,
                created_at: now,
                expires_at: now + ttl,
            };
            own::insert_reservation(&txn, backend, &record).await?;
            // Usage read before this reservation does not hold it: add it to every limit it
            // counts against (usage read from now on holds it already).
            let call = request.scope.event_at(now);
            for (limit, u) in usage.values_mut() {
                if counts_against(limit, &call) {
                    u.amounts = u.amounts.plus(asked);
                }
            }
            outcomes.push(ReserveOutcome::Reserved(Box::new(record)));
        }
        commit(txn, "reserve quota").await?;
        Ok(outcomes)
    }

    /// [`UsageStore::commit_many`] in one transaction: one lock of the limits, one flush,
    /// for every call committed together.
    async fn commit_many_once(&self, commits: &[(Uuid, UsageEvent)]) -> Result<()> {
        let txn = self.begin("commit usage").await?;
        let events: Vec<UsageEvent> = commits.iter().map(|(_, e)| e.clone()).collect();
        let ids: Vec<Uuid> = commits.iter().map(|(id, _)| *id).collect();
        let limits = self.lock_for(&txn, &events).await?;
        own::delete_reservations(&txn, self.backend(), &ids).await?;
        self.write_events(&txn, &events).await?;
        if self.schema == Schema::Own {
            counters::add(&txn, self.backend(), &limits, &events).await?;
            rollups::add(&txn, self.backend(), &events).await?;
        }
        commit(txn, "commit usage").await
    }

    async fn commit_once(&self, reservation: Uuid, event: &UsageEvent) -> Result<()> {
        let txn = self.begin("commit usage").await?;
        // The limits this usage counts against are locked as by `reserve`, so that no
        // reservation reads usage while this one turns from held into used (under READ
        // COMMITTED each statement sees its own snapshot).
        let limits = self.lock_for(&txn, std::slice::from_ref(event)).await?;
        own::delete_reservation(&txn, self.backend(), reservation).await?;
        self.write_events(&txn, std::slice::from_ref(event)).await?;
        if self.schema == Schema::Own {
            let one = std::slice::from_ref(event);
            counters::add(&txn, self.backend(), &limits, one).await?;
            rollups::add(&txn, self.backend(), one).await?;
        }
        commit(txn, "commit usage").await
    }
}
