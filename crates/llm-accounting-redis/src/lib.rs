//! The Redis quota engine of llm-accounting (`accounting.engine = redis`): for deployments
//! where many replicas reserve against the same limits and one database's write lock is the
//! bottleneck.
//!
//! [`RedisUsageStore`] is a [`llm_accounting_usage::UsageStore`] over another one, the
//! database, which stays the source of truth:
//!
//! - usage events, limits, statistics, `tail`, `purge` and `usage` go to the database;
//! - reservations and per-limit counters (usage per window bucket, see
//!   [`llm_accounting_usage::buckets`]) live in Redis. One Lua script checks every limit
//!   that governs a call (precedence and exemptions as in the database engine:
//!   [`llm_accounting_usage::governing`]) and, only if all have room, holds the estimate:
//!   all or nothing, atomically, whatever the number of processes. A check reads at most
//!   `max_buckets` (default 120) small hashes per limit, whatever the number of events;
//! - a commit writes the event to the database first, then (a second script) drops the
//!   reservation and adds the event to the counters of every limit it counts against.
//!
//! Needs Redis 6.2 or later (or a compatible server with Lua scripting), reached over plain
//! TCP (`redis://`); this build has no TLS.
//!
//! ```no_run
//! # async fn demo(database: std::sync::Arc<dyn llm_accounting_usage::UsageStore>)
//! # -> llm_accounting_core::Result<()> {
//! use llm_accounting_redis::{RedisOptions, RedisUsageStore};
//! let store = RedisUsageStore::connect("redis://127.0.0.1:6379", database,
//!     RedisOptions::default()).await?;
//! # Ok(()) }
//! ```
//!
//! # Counters are rebuilt from the database, never trusted blindly
//!
//! Every key lives under a *generation* (`{prefix}:gen`). When Redis loses its data (a
//! restart without persistence, `FLUSHALL`, a failover to an empty replica) the generation
//! is gone: the next script starts a new one, finds no counters, and each limit's counters
//! are rebuilt from the database (its buckets summed with
//! [`llm_accounting_usage::UsageStore::usage`]) the first time a call needs them. The same
//! happens after `purge_before` (a new generation), for the counters that missed usage this
//! process recorded while it could not reach Redis (at its next successful contact), and at
//! least every [`RedisOptions::rebuild_every`]; a limit whose scope or window changes gets
//! fresh counters. So counters do not drift from the database.
//!
//! A rebuild is exact even while other processes commit: a commit registers itself in Redis
//! as in flight before writing the database and leaves after adding to the counters; a
//! rebuild takes a lease (commits touching those counters wait), waits for the commits in
//! flight to finish, then reads the database and installs the sums. Every event is therefore
//! either in the database read or added afterwards, never both, never neither. A commit that
//! began before a loss and ends after it cannot tell whether the rebuild read its event: it
//! adds nothing and sends its counters back to be rebuilt once more. A commit
//! stalled between its two steps for longer than [`RedisOptions::commit_lease`] (30 s) is no
//! longer waited for; if it then lands after the read it is missed until the next rebuild.
//!
//! # The bound on overshoot after a loss
//!
//! Reservations live only in Redis. When Redis loses its data, the reservations in flight at
//! that moment stop being held, while their calls are still running: new reservations may be
//! granted against room those calls will use. When they commit, their usage is recorded in
//! the database, and counted exactly once (by the rebuild, or by a rebuild that the commit
//! itself asks for). The overshoot of a limit after a loss is therefore at most **the
//! amounts of the reservations in flight at the loss** that it governed (precisely: their
//! actual usage, as committed). Nothing else can pass a limit: every reservation granted
//! after the rebuild is checked against the database's sums plus what is held. The test
//! `a_flush_in_the_middle_of_a_race_is_bounded_and_rebuilt` asserts this bound and that the
//! rebuilt counters equal the database's sums.
//!
//! # Redis unreachable
//!
//! Reserve, check and release fail with [`llm_accounting_core::Error::DatabaseUnavailable`]
//! (retryable; exit 5 on the command line), with an operation naming Redis, unless
//! [`RedisOptions::fallback`] is set (`accounting.redis_fallback = database`): then the same
//! call is answered by the database engine and a warning is logged (at most every 10 s). A
//! reservation made by the fallback lives in the database; `commit` and `release` clean it up
//! there. Usage is always recorded in the database, even when Redis is down (the counters are
//! rebuilt at the next contact).
//!
//! # Redis must keep what it is given
//!
//! Use a Redis that does not evict keys (`maxmemory-policy noeviction`, the default): an
//! evicted bucket would read as empty while its limit is marked built. Use one logical
//! database (or [`RedisOptions::prefix`]) per accounting database.
//!
//! # Numbers
//!
//! Lua numbers are doubles: integers are exact up to 2^53 (about 9 × 10^15). Each event's
//! amounts are bounded ([`llm_accounting_usage::MAX_TOKENS`] = 10^12 tokens,
//! [`llm_accounting_usage::MAX_COST`] = $10^9 = 10^15 micro-dollars), so every single
//! addition is exact, and counters saturate at 2^53 instead of overflowing: a window would
//! need 9,000 maximal-token events or nine maximal-cost ones to get there, far beyond any
//! limit that is meant to refuse anything.
//!
//! # What this engine does not see
//!
//! Rows written into the database by other writers (the Python llm-accounting package) are
//! counted at the next rebuild of the limit, not at once. A rolling window's oldest partial
//! bucket is read from the database on each check (a range of at most one bucket step), so
//! rolling windows are exact at the event level.

mod scripts;
mod store;

pub use store::{RedisOptions, RedisUsageStore, ping, redact_url};
