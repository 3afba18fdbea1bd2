//! [`RedisUsageStore`]: the [`UsageStore`] whose reservations and counters live in Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::buckets::{CounterPlan, bucket_of, keep_for};
use llm_accounting_usage::{
    Amounts, Denial, Limit, LimitKind, NewLimit, QuotaDecision, QuotaRequest, ReservationRecord,
    ReserveOutcome, Scope, StatsQuery, StatsRow, Usage, UsageEvent, UsageStore, counts_against,
    governing, resets_at,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use uuid::Uuid;

use crate::scripts::Scripts;

/// How the Redis engine behaves; [`Default`] suits most deployments.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The prefix of every key. It should contain a Redis Cluster hash tag (`{...}`) so that
    /// all keys are in one slot; default `{llm-accounting}`.
    pub prefix: String,
    /// How often the limits are re-read from the database (default 1 s): a limit added or
    /// deleted by another process applies here within this time; one added or deleted
    /// through this store applies at once.
    pub limits_refresh: Duration,
    /// When Redis cannot be reached, answer with the database engine instead of failing
    /// with [`Error::DatabaseUnavailable`] (`accounting.redis_fallback = database`).
    pub fallback: bool,
    /// Buckets per rolling window (default 120): what a check reads per limit.
    pub max_buckets: u64,
    /// How long a commit may take between its two Redis steps before a rebuild stops
    /// waiting for it (default 30 s).
    pub commit_lease: Duration,
    /// Counters are rebuilt from the database at least this often (default 24 h), which
    /// also folds in rows that other writers put in the database.
    pub rebuild_every: Duration,
    /// Connecting to Redis gives up after this (default 1 s).
    pub connect_timeout: Duration,
    /// A command gives up after this (default 2 s).
    pub response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "{llm-accounting}".into(),
            limits_refresh: Duration::from_secs(1),
            fallback: false,
            max_buckets: 120,
            commit_lease: Duration::from_secs(30),
            rebuild_every: Duration::from_secs(24 * 3600),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
        }
    }
}

/// How often the fallback warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// `now` for database reads that must not count the database's own reservations: none is
/// alive then.
fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_214_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Usage events, limits and statistics in a database (the source of truth); reservations
/// and per-limit counters in Redis, checked and held by one Lua script. See the crate
/// documentation.
pub struct RedisUsageStore {
    conn: ConnectionManager,
    database: Arc<dyn UsageStore>,
    options: RedisOptions,
    scripts: Scripts,
    limits: Mutex<Option<(Instant, Arc<Vec<Limit>>)>>,
    /// Set after a purge that Redis did not hear of: the next successful contact starts a new
    /// generation (every counter rebuilt).
    stale: AtomicBool,
    /// Usage recorded in the database while Redis could not be reached: the reservations it
    /// committed and the counters it missed, caught up at the next successful contact.
    missed: Mutex<Missed>,
    generation: Mutex<Option<String>>,
    last_warning: Mutex<Option<Instant>>,
    /// The URL without its password, for messages.
    shown_url: String,
}

impl std::fmt::Debug for RedisUsageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUsageStore")
            .field("url", &self.shown_url)
            .field("database", &self.database)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced by `***` (and a user name kept), for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{shown}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Whether the Redis at `url` answers a `PING` within `timeout` (for `doctor`).
///
/// # Errors
///
/// [`Error::Config`] for an unusable URL, [`Error::DatabaseUnavailable`] when Redis does not
/// answer; neither shows the URL's password.
pub async fn ping(url: &str, timeout: Duration) -> Result<()> {
    let shown = redact_url(url);
    let client = redis::Client::open(url).map_err(|e| {
        Error::config(format!(
            "accounting.redis_url {shown} cannot be used: {}",
            e.category()
        ))
    })?;
    let attempt = async {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| redis_error("ping Redis", e))?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map_err(|e| redis_error("ping Redis", e))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(Error::DatabaseUnavailable {
            operation: "ping Redis (timed out)",
            source: None,
        }),
    }
}

/// Deletes the keys matching `pattern` (SCAN, then UNLINK in batches).
async fn unlink_matching(c: &mut ConnectionManager, pattern: &str) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(c)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).query_async::<()>(c).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Whether a Redis failure means "cannot be reached now" (retryable) rather than a bug.
fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Io
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

fn redis_error(operation: &'static str, e: RedisError) -> Error {
    if is_outage(&e) {
        Error::DatabaseUnavailable {
            operation,
            source: Some(Arc::new(e)),
        }
    } else {
        Error::Database {
            operation,
            source: Some(Arc::new(e)),
        }
    }
}

fn unexpected(operation: &'static str, reply: &[String]) -> Error {
    Error::Database {
        operation,
        source: Some(Arc::new(std::io::Error::other(format!(
            "unexpected reply from Redis: {reply:?}"
        )))),
    }
}

/// The name of a limit's counters: a stable hash of its scope and window (kind and maximum
/// do not change what is counted). A changed limit gets fresh counters; limits that count
/// the same calls over the same window share them.
fn counters_of(limit: &Limit) -> String {
    let mut canonical = String::new();
    for (name, value) in limit.scope.parts() {
        canonical.push_str(name);
        match value {
            Some(v) => canonical.push_str(&format!("={}:{v};", v.len())),
            None => canonical.push_str("-;"),
        }
    }
    if limit.scope.no_project {
        canonical.push_str("no_project;");
    }
    canonical.push_str(&format!("{:?}", limit.window));
    // FNV-1a, 64 bits: stable across processes and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn kind_code(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Requests => "r",
        LimitKind::InputTokens => "i",
        LimitKind::OutputTokens => "o",
        LimitKind::TotalTokens => "t",
        LimitKind::Cost => "c",
    }
}

fn amounts_args(a: &Amounts) -> [String; 4] {
    [
        a.requests.to_string(),
        a.input_tokens.to_string(),
        a.output_tokens.to_string(),
        a.cost.micros().to_string(),
    ]
}

/// Milliseconds a bucket ending at `end` must live: until no plan reads it any more, plus a
/// day, counted from the wall clock.
fn bucket_ttl_ms(limit: &Limit, end: DateTime<Utc>) -> i64 {
    let left = (end + keep_for(limit.window) - Utc::now()).num_milliseconds();
    left.max(0).saturating_add(86_400_000)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn wall_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A governing limit ready for the reserve script.
struct Planned<'a> {
    limit: &'a Limit,
    counters: String,
    plan: CounterPlan,
    edge: Usage,
}

/// What the reserve script answered.
enum Verdict {
    Allowed,
    Need(Vec<String>),
    Denied {
        index: usize,
        used: u64,
        asked: u64,
        oldest: Option<DateTime<Utc>>,
    },
}

impl RedisUsageStore {
    /// A store over `database` with its quota state in the Redis at `url`
    /// (`redis://[user:password@]host[:port][/db]`; `rediss://` needs TLS, which this build
    /// does not have). Connects lazily: an unreachable Redis shows on the first call, as
    /// [`Error::DatabaseUnavailable`] (or, with [`RedisOptions::fallback`], as a warning
    /// and the database engine's answer).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL the client cannot use (the message never shows its
    /// password).
    pub async fn connect(
        url: &str,
        database: Arc<dyn UsageStore>,
        options: RedisOptions,
    ) -> Result<Self> {
        let shown_url = redact_url(url);
        let client = redis::Client::open(url).map_err(|e| {
            Error::config(format!(
                "accounting.redis_url {shown_url} cannot be used: {}",
                e.category()
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| Error::config(format!("accounting.redis_url {shown_url}: {e}")))?;
        Ok(RedisUsageStore {
            conn,
            database,
            options,
            scripts: Scripts::new(),
            limits: Mutex::new(None),
            stale: AtomicBool::new(false),
            missed: Mutex::new(Missed::default()),
            generation: Mutex::new(None),
            last_warning: Mutex::new(None),
            shown_url,
        })
    }

    /// The database underneath (the source of truth).
    pub fn database(&self) -> &Arc<dyn UsageStore> {
        &self.database
    }

    /// The Redis URL as it may be shown (password replaced by `***`).
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// Whether Redis answers a `PING` (for `doctor`).
    ///
    /// # Errors
    ///
    /// [`Error::DatabaseUnavailable`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| redis_error("ping Redis", e))
    }

    /// Starts a new generation: every counter is rebuilt from the database on its next use
    /// and every reservation held in Redis is dropped (as after a loss of Redis's data).
    ///
    /// # Errors
    ///
    /// [`Error::DatabaseUnavailable`] when Redis cannot be reached.
    pub async fn rebuild_all(&self) -> Result<()> {
        let mut c = self.conn.clone();
        let generation = Uuid::new_v4().to_string();
        let old: Option<String> = redis::cmd("SET")
            .arg(format!("{}:gen", self.options.prefix))
            .arg(&generation)
            .arg("GET")
            .query_async(&mut c)
            .await
            .map_err(|e| redis_error("start a new generation in Redis", e))?;
        tracing::info!("quota counters in Redis: new generation, rebuilt from the database");
        *lock(&self.generation) = Some(generation);
        // The old generation's keys are garbage now (reservations and held amounts have no
        // TTL of their own): remove them in the background.
        if let Some(old) = old {
            let pattern = format!("{}:{old}:*", self.options.prefix);
            tokio::spawn(async move {
                if let Err(e) = unlink_matching(&mut c, &pattern).await {
                    tracing::debug!("removing an old generation's keys from Redis: {e}");
                }
            });
        }
        Ok(())
    }

    /// What Redis counts for `limit` at `now`: its buckets (with a rolling window's edge
    /// read from the database) plus what live reservations hold, as the reserve script sees
    /// it; building the counters first if needed. For tests and diagnostics.
    ///
    /// # Errors
    ///
    /// As [`UsageStore::check`].
    pub async fn counted(&self, limit: &Limit, now: DateTime<Utc>) -> Result<Amounts> {
        // A probe that asks for nothing against a limit of "nothing yet": the denial carries
        // the usage in each kind.
        let mut out = Amounts::default();
        for kind in [
            LimitKind::Requests,
            LimitKind::InputTokens,
            LimitKind::OutputTokens,
            LimitKind::Cost,
        ] {
            let probe = Limit {
                kind,
                max: 0,
                ..limit.clone()
            };
            let p = self.plan(&probe, now).await?;
            let used = loop {
                match self
                    .run_reserve(
                        None,
                        &Amounts::default(),
                        &[],
                        std::slice::from_ref(&p),
                        now,
                    )
                    .await?
                {
                    Verdict::Denied { used, .. } => break used,
                    Verdict::Need(_) => self.build(&probe, now).await?,
                    Verdict::Allowed => break 0,
                }
            };
            match kind {
                LimitKind::Requests => out.requests = used,
                LimitKind::InputTokens => out.input_tokens = used,
                LimitKind::OutputTokens => out.output_tokens = used,
                _ => out.cost = llm_accounting_usage::Money::from_micros(used),
            }
        }
        Ok(out)
    }

    async fn limits_cached(&self) -> Result<Arc<Vec<Limit>>> {
        if let Some((at, l)) = lock(&self.limits).as_ref()
            && at.elapsed() < self.options.limits_refresh
        {
            return Ok(Arc::clone(l));
        }
        let fresh = Arc::new(self.database.limits().await?);
        *lock(&self.limits) = Some((Instant::now(), Arc::clone(&fresh)));
        Ok(fresh)
    }

    fn forget_limits(&self) {
        *lock(&self.limits) = None;
    }

    /// Runs a script, after catching up with what Redis missed (see [`Missed`]).
    async fn script(
        &self,
        operation: &'static str,
        invocation: &mut redis::ScriptInvocation<'_>,
    ) -> Result<Vec<String>> {
        if self.stale.load(Ordering::Acquire) {
            self.rebuild_all().await?;
            self.stale.store(false, Ordering::Release);
        }
        let missed = std::mem::take(&mut *lock(&self.missed));
        if !missed.is_empty() {
            let mut inv = self.scripts.catch_up.prepare_invoke();
            inv.arg(Uuid::new_v4().to_string())
                .arg(missed.reservations.len());
            for r in &missed.reservations {
                inv.arg(r.to_string());
            }
            for c in &missed.counters {
                inv.arg(c);
            }
            if let Err(e) = self.invoke("catch up with Redis", &mut inv).await {
                lock(&self.missed).merge(missed);
                return Err(e);
            }
            tracing::info!(
                counters = missed.counters.len(),
                "Redis answers again: the counters that missed usage are rebuilt"
            );
        }
        self.invoke(operation, invocation).await
    }

    /// Runs a script and notes its generation.
    async fn invoke(
        &self,
        operation: &'static str,
        invocation: &mut redis::ScriptInvocation<'_>,
    ) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        let reply: Vec<String> = invocation
            .key(&self.options.prefix)
            .invoke_async(&mut c)
            .await
            .map_err(|e| redis_error(operation, e))?;
        let Some(generation) = reply.first() else {
            return Err(unexpected(operation, &reply));
        };
        let mut known = lock(&self.generation);
        if known.as_deref() != Some(generation.as_str()) {
            if known.is_some() {
                tracing::warn!(
                    "Redis at {} lost the quota state (new generation): counters are rebuilt \
                     from the database; reservations in flight were dropped",
                    self.shown_url
                );
            }
            *known = Some(generation.clone());
        }
        Ok(reply)
    }

    /// The plan of `limit` at `now`, with the rolling window's edge read from the database.
    async fn plan<'a>(&self, limit: &'a Limit, now: DateTime<Utc>) -> Result<Planned<'a>> {
        let plan = CounterPlan::new(limit.window, now, self.options.max_buckets);
        let edge = match plan.edge {
            Some((since, until)) => {
                self.database
                    .usage(&limit.scope, since, until, far_future())
                    .await?
            }
            None => Usage::default(),
        };
        Ok(Planned {
            limit,
            counters: counters_of(limit),
            plan,
            edge,
        })
    }

    async fn run_reserve(
        &self,
        hold: Option<(Uuid, DateTime<Utc>)>,
        asked: &Amounts,
        holds: &[String],
        planned: &[Planned<'_>],
        now: DateTime<Utc>,
    ) -> Result<Verdict> {
        let operation = if hold.is_some() {
            "reserve quota in Redis"
        } else {
            "check quota in Redis"
        };
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.arg(Uuid::new_v4().to_string())
            .arg(now.timestamp_micros())
            .arg(if hold.is_some() { "R" } else { "C" });
        match hold {
            Some((id, expires)) => {
                inv.arg(id.to_string()).arg(expires.timestamp_micros());
            }
            None => {
                inv.arg("").arg(0);
            }
        }
        inv.arg(&amounts_args(asked)[..]).arg(holds.len());
        for h in holds {
            inv.arg(h);
        }
        inv.arg(planned.len());
        for p in planned {
            let from = p
                .plan
                .buckets
                .first()
                .map_or(now.timestamp_micros(), |b| b.key());
            inv.arg(&p.counters)
                .arg(kind_code(p.limit.kind))
                .arg(p.limit.max)
                .arg(from)
                .arg(&amounts_args(&p.edge.amounts)[..])
                .arg(
                    p.edge
                        .oldest
                        .map_or(String::new(), |t| t.timestamp_micros().to_string()),
                )
                .arg(p.plan.buckets.len());
            for b in &p.plan.buckets {
                inv.arg(b.key());
            }
        }
        let reply = self.script(operation, &mut inv).await?;
        match reply.get(1).map(String::as_str) {
            Some("OK") => Ok(Verdict::Allowed),
            Some("NEED") => Ok(Verdict::Need(reply[2..].to_vec())),
            Some("DENIED") if reply.len() >= 6 => {
                let num = |s: &str| s.parse::<u64>().map_err(|_| unexpected(operation, &reply));
                let index = num(&reply[2])? as usize;
                Ok(Verdict::Denied {
                    index: index.saturating_sub(1),
                    used: num(&reply[3])?,
                    asked: num(&reply[4])?,
                    oldest: reply[5]
                        .parse::<i64>()
                        .ok()
                        .and_then(DateTime::from_timestamp_micros),
                })
            }
            _ => Err(unexpected(operation, &reply)),
        }
    }

    /// Builds `limit`'s counters for the plan at `now` from the database (unless another
    /// process does it, or did): takes the lease, waits for commits in flight on them, sums
    /// each bucket, installs.
    async fn build(&self, limit: &Limit, now: DateTime<Utc>) -> Result<()> {
        let counters = counters_of(limit);
        let plan = CounterPlan::new(limit.window, now, self.options.max_buckets);
        let from = plan
            .buckets
            .first()
            .map_or(now.timestamp_micros(), |b| b.key());
        let lease = self.options.commit_lease + Duration::from_secs(30);
        let give_up = Instant::now() + lease * 2;
        loop {
            let token = Uuid::new_v4().to_string();
            let mut begin = self.scripts.build_begin.prepare_invoke();
            begin
                .arg(Uuid::new_v4().to_string())
                .arg(&counters)
                .arg(from)
                .arg(&token)
                .arg(millis(lease));
            let reply = self
                .script("rebuild quota counters in Redis", &mut begin)
                .await?;
            match reply.get(1).map(String::as_str) {
                Some("BUILT") => return Ok(()),
                Some("OK") => {}
                Some("WAIT") => {
                    if Instant::now() > give_up {
                        return Err(Error::DatabaseUnavailable {
                            operation: "wait for a rebuild of quota counters in Redis",
                            source: None,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                _ => return Err(unexpected("rebuild quota counters in Redis", &reply)),
            }
            tracing::debug!(
                limit = limit.id,
                counters,
                "building quota counters in Redis"
            );
            // Commits that started before the lease may or may not be in the database yet:
            // wait until they have finished (or lapsed).
            let drain_until = Instant::now() + self.options.commit_lease + Duration::from_secs(1);
            loop {
                let mut d = self.scripts.drained.prepare_invoke();
                d.arg(Uuid::new_v4().to_string())
                    .arg(&counters)
                    .arg(wall_ms());
                let reply = self
                    .script("rebuild quota counters in Redis", &mut d)
                    .await?;
                if reply.get(1).map(String::as_str) == Some("0") || Instant::now() > drain_until {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut install = self.scripts.install.prepare_invoke();
            install
                .arg(Uuid::new_v4().to_string())
                .arg(&counters)
                .arg(&token)
                .arg(from)
                .arg(millis(self.options.rebuild_every))
                .arg(plan.buckets.len());
            for b in &plan.buckets {
                let u = self
                    .database
                    .usage(&limit.scope, b.start, b.end, far_future())
                    .await?;
                install
                    .arg(b.key())
                    .arg(bucket_ttl_ms(limit, b.end))
                    .arg(&amounts_args(&u.amounts)[..])
                    .arg(
                        u.oldest
                            .map_or(String::new(), |t| t.timestamp_micros().to_string()),
                    );
            }
            let reply = self
                .script("rebuild quota counters in Redis", &mut install)
                .await?;
            match reply.get(1).map(String::as_str) {
                Some("OK") => return Ok(()),
                // The lease lapsed (a slow database) or Redis lost its data meanwhile.
                Some("LOST") if Instant::now() < give_up => continue,
                _ => return Err(unexpected("rebuild quota counters in Redis", &reply)),
            }
        }
    }

    /// Checks (and with `hold`, holds) in Redis, building counters as needed.
    async fn decide(
        &self,
        request: &QuotaRequest,
        hold: Option<(Uuid, DateTime<Utc>)>,
        now: DateTime<Utc>,
    ) -> Result<Option<Denial>> {
        let limits = self.limits_cached().await?;
        let gov = governing(limits.iter(), &request.scope);
        // A reservation holds against every limit whose scope it is in (exempted or not), as
        // the database engine counts reservations by scope.
        let holds: Vec<String> = limits
            .iter()
            .filter(|l| !l.is_unlimited() && l.scope.matches(&request.scope))
            .map(counters_of)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut planned = Vec::with_capacity(gov.len());
        for l in &gov {
            planned.push(self.plan(l, now).await?);
        }
        let asked = request.amounts();
        for _ in 0..8 {
            match self
                .run_reserve(hold, &asked, &holds, &planned, now)
                .await?
            {
                Verdict::Allowed => return Ok(None),
                Verdict::Denied {
                    index,
                    used,
                    asked,
                    oldest,
                } => {
                    let Some(p) = planned.get(index) else {
                        return Err(unexpected("reserve quota in Redis", &[index.to_string()]));
                    };
                    let l = p.limit;
                    return Ok(Some(Denial {
                        limit: l.clone(),
                        usage: used,
                        requested: asked,
                        max: l.max,
                        resets_at: resets_at(l.window, oldest, now),
                    }));
                }
                Verdict::Need(counters) => {
                    for p in planned.iter().filter(|p| counters.contains(&p.counters)) {
                        self.build(p.limit, now).await?;
                    }
                }
            }
        }
        Err(Error::DatabaseUnavailable {
            operation: "reserve quota in Redis (counters kept being rebuilt)",
            source: None,
        })
    }

    /// Whether to answer with the database after `e`, logging (at most every few seconds)
    /// that Redis is down.
    fn falls_back(&self, e: &Error) -> bool {
        if !self.options.fallback || !matches!(e, Error::DatabaseUnavailable { .. }) {
            return false;
        }
        let mut last = lock(&self.last_warning);
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                "Redis at {} unavailable ({e}); quotas enforced by the database engine \
                 (accounting.redis_fallback = database)",
                self.shown_url
            );
        }
        true
    }

    /// The counters each event counts against, and the per-bucket sums to add to them.
    fn additions(&self, limits: &[Limit], events: &[UsageEvent]) -> (Vec<String>, Vec<Entry>) {
        let mut sums: BTreeMap<(String, i64), Entry> = BTreeMap::new();
        let mut names = BTreeSet::new();
        for l in limits.iter().filter(|l| !l.is_unlimited()) {
            let counters = counters_of(l);
            if names.contains(&counters) {
                continue;
            }
            let mut any = false;
            for e in events.iter().filter(|e| counts_against(l, e)) {
                any = true;
                let b = bucket_of(l.window, e.at, self.options.max_buckets);
                let entry = sums
                    .entry((counters.clone(), b.key()))
                    .or_insert_with(|| Entry {
                        counters: counters.clone(),
                        start: b.key(),
                        ttl_ms: bucket_ttl_ms(l, b.end),
                        amounts: Amounts::default(),
                        oldest: e.at,
                    });
                entry.amounts = entry.amounts.plus(Amounts::of_event(e));
                entry.oldest = entry.oldest.min(e.at);
            }
            if any {
                names.insert(counters);
            }
        }
        (names.into_iter().collect(), sums.into_values().collect())
    }

    /// Writes usage to the database and adds it to Redis's counters, in the order that keeps
    /// a concurrent rebuild exact (see the crate docs). `write` is the database step.
    async fn record<F, Fut>(
        &self,
        reservation: Option<Uuid>,
        events: &[UsageEvent],
        write: F,
    ) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let limits = self.limits_cached().await?;
        let (names, entries) = self.additions(&limits, events);
        let token = Uuid::new_v4().to_string();
        let begun = self.commit_begin(&token, &names).await;
        let began = begun.as_ref().map_or(String::new(), Clone::clone);
        let written = write().await;
        if let Err(e) = &begun {
            // The usage happened: it is recorded anyway, and its counters are rebuilt once
            // Redis answers.
            if written.is_ok() {
                self.missed_usage(reservation, names, e);
            }
            return written;
        }
        let mut end = self.scripts.commit_end.prepare_invoke();
        end.arg(Uuid::new_v4().to_string())
            .arg(&token)
            .arg(&began)
            .arg(reservation.map_or(String::new(), |r| r.to_string()))
            .arg(if written.is_ok() { "1" } else { "0" })
            .arg(names.len());
        for n in &names {
            end.arg(n);
        }
        end.arg(entries.len());
        for e in &entries {
            end.arg(&e.counters)
                .arg(e.start)
                .arg(e.ttl_ms)
                .arg(&amounts_args(&e.amounts)[..])
                .arg(e.oldest.timestamp_micros());
        }
        if let Err(e) = self.script("commit usage to Redis", &mut end).await
            && written.is_ok()
        {
            self.missed_usage(reservation, names, &e);
        }
        written
    }

    /// Remembers usage the database recorded and Redis did not hear of.
    fn missed_usage(&self, reservation: Option<Uuid>, counters: Vec<String>, e: &Error) {
        let mut last = lock(&self.last_warning);
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                "Redis at {} unavailable while recording usage ({e}); the database recorded \
                 it, and the counters concerned are rebuilt when Redis answers",
                self.shown_url
            );
        }
        lock(&self.missed).merge(Missed {
            reservations: reservation.into_iter().collect(),
            counters: counters.into_iter().collect(),
        });
    }

    /// Registers a commit as in flight; its generation.
    async fn commit_begin(&self, token: &str, names: &[String]) -> Result<String> {
        let give_up = Instant::now() + self.options.commit_lease * 2;
        loop {
            let mut begin = self.scripts.commit_begin.prepare_invoke();
            begin
                .arg(Uuid::new_v4().to_string())
                .arg(token)
                .arg(wall_ms().saturating_add(
                    i64::try_from(millis(self.options.commit_lease)).unwrap_or(i64::MAX / 4),
                ))
                .arg(millis(self.options.commit_lease * 2))
                .arg(names.len());
            for n in names {
                begin.arg(n);
            }
            let reply = self.script("commit usage to Redis", &mut begin).await?;
            match reply.get(1).map(String::as_str) {
                Some("OK") => return Ok(reply[0].clone()),
                // A rebuild of these counters is reading the database: wait for it.
                Some("BUSY") if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                _ => return Err(unexpected("commit usage to Redis", &reply)),
            }
        }
    }
}

/// What Redis missed while it could not be reached.
#[derive(Debug, Default)]
struct Missed {
    /// Reservations committed in the database only (still held in Redis).
    reservations: BTreeSet<Uuid>,
    /// Counters that miss usage the database has.
    counters: BTreeSet<String>,
}

impl Missed {
    fn is_empty(&self) -> bool {
        self.reservations.is_empty() && self.counters.is_empty()
    }

    fn merge(&mut self, other: Missed) {
        self.reservations.extend(other.reservations);
        self.counters.extend(other.counters);
        // Beyond this, let them lapse by themselves (their TTL) rather than grow without end.
        if self.reservations.len() > 10_000 {
            self.reservations.clear();
        }
    }
}

/// Usage to add to one bucket of one set of counters.
struct Entry {
    counters: String,
    start: i64,
    ttl_ms: i64,
    amounts: Amounts,
    oldest: DateTime<Utc>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl UsageStore for RedisUsageStore {
    async fn insert_events(&self, events: &[UsageEvent]) -> Result<()> {
        for e in events {
            e.validate()?;
        }
        self.record(None, events, || self.database.insert_events(events))
            .await
    }

    async fn add_limit(&self, limit: &NewLimit) -> Result<Limit> {
        let l = self.database.add_limit(limit).await;
        self.forget_limits();
        l
    }

    async fn limits(&self) -> Result<Vec<Limit>> {
        self.database.limits().await
    }

    async fn delete_limit(&self, id: i64) -> Result<bool> {
        let d = self.database.delete_limit(id).await;
        self.forget_limits();
        d
    }

    /// The database's answer: events (and reservations the fallback made there); the
    /// reservations held in Redis are not included.
    async fn usage(
        &self,
        scope: &Scope,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Usage> {
        self.database.usage(scope, since, until, now).await
    }

    async fn check(&self, request: &QuotaRequest, now: DateTime<Utc>) -> Result<QuotaDecision> {
        request.validate()?;
        match self.decide(request, None, now).await {
            Ok(None) => Ok(QuotaDecision::Allowed),
            Ok(Some(d)) => Ok(QuotaDecision::Denied(Box::new(d))),
            Err(e) if self.falls_back(&e) => self.database.check(request, now).await,
            Err(e) => Err(e),
        }
    }

    async fn reserve(
        &self,
        request: &QuotaRequest,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<ReserveOutcome> {
        request.validate()?;
        let lifetime = chrono::Duration::from_std(ttl)
            .map_err(|_| Error::invalid("reservation ttl", "too long"))?;
        let id = Uuid::new_v4();
        let expires_at = now + lifetime;
        match self.decide(request, Some((id, expires_at)), now).await {
            Ok(None) => Ok(ReserveOutcome::Reserved(Box::new(ReservationRecord {
                id,
                scope: request.scope.clone(),
                amounts: request.amounts(),
                created_at: now,
                expires_at,
            }))),
            Ok(Some(d)) => Ok(ReserveOutcome::Denied(Box::new(d))),
            Err(e) if self.falls_back(&e) => {
                // The script may have run and only its answer been lost: drop what it may
                // hold once Redis answers again.
                lock(&self.missed).merge(Missed {
                    reservations: BTreeSet::from([id]),
                    counters: BTreeSet::new(),
                });
                self.database.reserve(request, ttl, now).await
            }
            Err(e) => Err(e),
        }
    }

    /// The database first (the source of truth), then Redis. A reservation the fallback
    /// made in the database is committed there.
    async fn commit(&self, reservation: Uuid, event: &UsageEvent) -> Result<()> {
        event.validate()?;
        self.record(Some(reservation), std::slice::from_ref(event), || {
            self.database.commit(reservation, event)
        })
        .await
    }

    async fn release(&self, reservation: Uuid) -> Result<bool> {
        let mut inv = self.scripts.release.prepare_invoke();
        inv.arg(Uuid::new_v4().to_string())
            .arg(reservation.to_string());
        match self
            .script("release a reservation in Redis", &mut inv)
            .await
        {
            Ok(reply) if reply.get(1).map(String::as_str) == Some("1") => Ok(true),
            // Not held in Redis: perhaps made by the fallback in the database.
            Ok(_) => self.database.release(reservation).await,
            Err(e) if self.falls_back(&e) => self.database.release(reservation).await,
            Err(e) => Err(e),
        }
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Vec<StatsRow>> {
        self.database.stats(query).await
    }

    async fn tail(&self, n: usize) -> Result<Vec<UsageEvent>> {
        self.database.tail(n).await
    }

    /// Deletes in the database, then starts a new generation so that no counter keeps the
    /// purged events (if Redis cannot be reached, at the next contact).
    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let n = self.database.purge_before(before).await?;
        self.stale.store(true, Ordering::Release);
        if let Err(e) = self.rebuild_all().await {
            tracing::warn!(
                "Redis at {} unavailable after a purge ({e})",
                self.shown_url
            );
        } else {
            self.stale.store(false, Ordering::Release);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/2"),
            "redis://:***@host:6379/2"
        );
        assert_eq!(
            redact_url("redis://app:s3cret@host/0?x=1"),
            "redis://app:***@host/0?x=1"
        );
        assert_eq!(redact_url("redis://token@host"), "redis://***@host");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn counters_depend_on_scope_and_window_only() {
        let l = Limit {
            id: 1,
            scope: Scope::global(),
            kind: LimitKind::Requests,
            max: 3,
            window: llm_accounting_usage::Window::rolling(60).expect("ok"),
            created_at: Utc::now(),
        };
        let same = Limit {
            id: 2,
            kind: LimitKind::Cost,
            max: 9,
            ..l.clone()
        };
        assert_eq!(counters_of(&l), counters_of(&same));
        let other = Limit {
            window: llm_accounting_usage::Window::rolling(61).expect("ok"),
            ..l.clone()
        };
        assert_ne!(counters_of(&l), counters_of(&other));
        let scoped = Limit {
            scope: Scope {
                user: Some("a".into()),
                ..Scope::global()
            },
            ..l.clone()
        };
        assert_ne!(counters_of(&l), counters_of(&scoped));
    }
}
