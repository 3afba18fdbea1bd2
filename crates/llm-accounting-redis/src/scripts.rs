//! The Lua scripts. Each runs atomically inside Redis; each starts with [`PRELUDE`], which
//! finds (or starts) the generation and defines the helpers.
//!
//! Keys, under the prefix `P` (which carries a hash tag, so every key is in one slot):
//!
//! - `P:gen`: the generation. Missing after a loss (FLUSHALL, a restart without persistence,
//!   a failover to an empty replica): the first script to run sets a new one, and every other
//!   key below, named under the generation, is absent, so every limit is rebuilt.
//! - `P:G:built:C`: counters `C` (a limit's scope and window) are built from bucket start `V`
//!   (microseconds) on; expires after `rebuild_every`, so counters are re-derived regularly.
//! - `P:G:building:C`: a rebuild holds this lease while it reads the database.
//! - `P:G:inflight:C`: commits between their first step and their last (ZSET, by deadline).
//! - `P:G:b:C:S`: the bucket starting at `S`: `r` requests, `i` input and `o` output tokens,
//!   `c` micro-dollars, `t` the oldest event's time.
//! - `P:G:held:C`: what live reservations hold against `C` (`r`, `i`, `o`, `c`; HINCRBY:
//!   each reservation is bounded, so the sum of the live ones stays far from 2^63).
//! - `P:G:res:ID`: a reservation: its amounts and `k`, the counters it holds against
//!   (removed when released, committed or lapsed, or with its generation).
//! - `P:G:exp`: reservations by expiry (ZSET), lapsed by every reserve and check.

/// Generation, helpers. ARGV[1] is always a fresh candidate generation.
const PRELUDE: &str = r"
local P = KEYS[1]
local gen = redis.call('GET', P .. ':gen')
if not gen then
  gen = ARGV[1]
  redis.call('SET', P .. ':gen', gen)
end
local G = P .. ':' .. gen .. ':'
local CAP = 9007199254740992
local F = {'r', 'i', 'o', 'c'}
local function num(v)
  if v then return tonumber(v) or 0 end
  return 0
end
local function fmt(v) return string.format('%.0f', v) end
local function add_to(key, amounts, sign)
  local cur = redis.call('HMGET', key, 'r', 'i', 'o', 'c')
  local set, del = {}, {}
  for j, f in ipairs(F) do
    local a = amounts[j]
    if a ~= 0 then
      local v = num(cur[j]) + sign * a
      if v > CAP then v = CAP end
      if v <= 0 then
        del[#del + 1] = f
      else
        set[#set + 1] = f
        set[#set + 1] = fmt(v)
      end
    end
  end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
  if #del > 0 then redis.call('HDEL', key, unpack(del)) end
end
local function hold_by(key, amounts, sign)
  for j, f in ipairs(F) do
    local a = amounts[j]
    if a ~= 0 then
      if redis.call('HINCRBY', key, f, sign * a) <= 0 then redis.call('HDEL', key, f) end
    end
  end
end
local function release(id)
  local rk = G .. 'res:' .. id
  local h = redis.call('HMGET', rk, 'r', 'i', 'o', 'c', 'k')
  redis.call('ZREM', G .. 'exp', id)
  if not h[5] then return 0 end
  local amounts = {num(h[1]), num(h[2]), num(h[3]), num(h[4])}
  for ck in string.gmatch(h[5], '[^,]+') do hold_by(G .. 'held:' .. ck, amounts, -1) end
  redis.call('DEL', rk)
  return 1
end
local function lapse(now)
  local ids = redis.call('ZRANGEBYSCORE', G .. 'exp', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(ids) do release(id) end
end
";

/// Check (mode `C`) or check and hold (mode `R`).
///
/// ARGV: gen, now, mode, id, expires, r, i, o, c, nhold, hold..., n, then per
/// limit: counters, kind, max, from, edge r, i, o, c, edge oldest, nb, bucket starts...
///
/// Returns `gen OK`, `gen NEED counters...` or `gen DENIED index used asked oldest`.
const RESERVE: &str = r"
local now = ARGV[2]
local mode = ARGV[3]
local resid = ARGV[4]
local expires = ARGV[5]
local ask = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local nhold = tonumber(ARGV[10])
local hold = {}
local pos = 11
for k = 1, nhold do
  hold[k] = ARGV[pos]
  pos = pos + 1
end
local n = tonumber(ARGV[pos])
pos = pos + 1
lapse(now)
local limits = {}
local need = {}
for k = 1, n do
  local l = {
    ck = ARGV[pos], kind = ARGV[pos + 1], max = tonumber(ARGV[pos + 2]),
    from = tonumber(ARGV[pos + 3]),
    edge = {tonumber(ARGV[pos + 4]), tonumber(ARGV[pos + 5]), tonumber(ARGV[pos + 6]),
      tonumber(ARGV[pos + 7])},
    eold = tonumber(ARGV[pos + 8]),
    buckets = {},
  }
  local nb = tonumber(ARGV[pos + 9])
  for b = 1, nb do l.buckets[b] = ARGV[pos + 9 + b] end
  pos = pos + 10 + nb
  local built = redis.call('GET', G .. 'built:' .. l.ck)
  if (not built) or tonumber(built) > l.from then need[#need + 1] = l.ck end
  limits[k] = l
end
if #need > 0 then return {gen, 'NEED', unpack(need)} end
local function of(kind, a)
  if kind == 'r' then return a[1]
  elseif kind == 'i' then return a[2]
  elseif kind == 'o' then return a[3]
  elseif kind == 't' then return a[2] + a[3]
  else return a[4] end
end
for k, l in ipairs(limits) do
  local used = {l.edge[1], l.edge[2], l.edge[3], l.edge[4]}
  local oldest = l.eold
  for _, b in ipairs(l.buckets) do
    local h = redis.call('HMGET', G .. 'b:' .. l.ck .. ':' .. b, 'r', 'i', 'o', 'c', 't')
    for j = 1, 4 do used[j] = used[j] + num(h[j]) end
    if h[5] then
      local t = tonumber(h[5])
      if (not oldest) or t < oldest then oldest = t end
    end
  end
  local held = redis.call('HMGET', G .. 'held:' .. l.ck, 'r', 'i', 'o', 'c')
  for j = 1, 4 do used[j] = used[j] + num(held[j]) end
  local u = of(l.kind, used)
  local a = of(l.kind, ask)
  if u >= l.max or u + a > l.max then
    local o = ''
    if oldest then o = fmt(oldest) end
    return {gen, 'DENIED', tostring(k), fmt(u), fmt(a), o}
  end
end
if mode == 'R' then
  local rk = G .. 'res:' .. resid
  redis.call('HSET', rk, 'r', fmt(ask[1]), 'i', fmt(ask[2]), 'o', fmt(ask[3]), 'c', fmt(ask[4]),
    'k', table.concat(hold, ','))
  redis.call('ZADD', G .. 'exp', expires, resid)
  for _, ck in ipairs(hold) do hold_by(G .. 'held:' .. ck, ask, 1) end
end
return {gen, 'OK'}
";

/// The first step of a commit (or of inserted events): registers it as in flight for each
/// counters it touches, unless one of them is being rebuilt.
///
/// ARGV: gen, token, deadline_ms, lease_ms, n, counters... Returns `gen OK` or `gen BUSY`.
const COMMIT_BEGIN: &str = r"
local token = ARGV[2]
local deadline = ARGV[3]
local lease = ARGV[4]
local n = tonumber(ARGV[5])
for k = 1, n do
  if redis.call('EXISTS', G .. 'building:' .. ARGV[5 + k]) == 1 then return {gen, 'BUSY'} end
end
for k = 1, n do
  local key = G .. 'inflight:' .. ARGV[5 + k]
  redis.call('ZADD', key, deadline, token)
  redis.call('PEXPIRE', key, lease)
end
return {gen, 'OK'}
";

/// The last step of a commit, after the database's: drops the reservation (if any), ends
/// the in-flight registration, adds the usage to the buckets of built counters.
///
/// A commit that began in an earlier generation (Redis lost its data in between) cannot
/// know whether a rebuild read its event from the database: it adds nothing and marks the
/// counters it touches unbuilt (ending a rebuild in progress), so they are rebuilt again.
///
/// ARGV: gen, token, began (generation of the first step), reservation ('' for none), apply
/// (1/0), n, counters..., m, then per entry: counters, bucket start, ttl_ms, r, i, o, c,
/// oldest. Returns `gen OK`.
const COMMIT_END: &str = r"
local token = ARGV[2]
local began = ARGV[3]
local resid = ARGV[4]
local apply = ARGV[5] == '1'
local n = tonumber(ARGV[6])
local pos = 7
if apply and resid ~= '' then release(resid) end
local moved = began ~= gen
for k = 1, n do
  redis.call('ZREM', G .. 'inflight:' .. ARGV[pos], token)
  if moved and apply then
    redis.call('DEL', G .. 'built:' .. ARGV[pos], G .. 'building:' .. ARGV[pos])
  end
  pos = pos + 1
end
if moved then return {gen, 'OK'} end
local m = tonumber(ARGV[pos])
pos = pos + 1
for k = 1, m do
  local ck, start, ttl = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  local amounts = {tonumber(ARGV[pos + 3]), tonumber(ARGV[pos + 4]), tonumber(ARGV[pos + 5]),
    tonumber(ARGV[pos + 6])}
  local t = ARGV[pos + 7]
  pos = pos + 8
  local built = redis.call('GET', G .. 'built:' .. ck)
  if apply and built and tonumber(built) <= tonumber(start) then
    local bk = G .. 'b:' .. ck .. ':' .. start
    add_to(bk, amounts, 1)
    local old = redis.call('HGET', bk, 't')
    if (not old) or tonumber(t) < tonumber(old) then redis.call('HSET', bk, 't', t) end
    redis.call('PEXPIRE', bk, ttl)
  end
end
return {gen, 'OK'}
";

/// The first step of a rebuild: takes the lease unless the counters are built (from `from`
/// on) or another rebuild holds it.
///
/// ARGV: gen, counters, from, token, lease_ms. Returns `gen BUILT`, `gen OK` or `gen WAIT`.
const BUILD_BEGIN: &str = r"
local ck, from, token, lease = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local built = redis.call('GET', G .. 'built:' .. ck)
if built and tonumber(built) <= tonumber(from) then return {gen, 'BUILT'} end
if redis.call('SET', G .. 'building:' .. ck, token, 'NX', 'PX', lease) then return {gen, 'OK'} end
return {gen, 'WAIT'}
";

/// How many commits touching the counters are still in flight (lapsed ones dropped).
///
/// ARGV: gen, counters, now_ms. Returns `gen COUNT`.
const DRAINED: &str = r"
local key = G .. 'inflight:' .. ARGV[2]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[3])
return {gen, tostring(redis.call('ZCARD', key))}
";

/// The last step of a rebuild: installs the buckets read from the database, if the lease is
/// still this rebuild's.
///
/// ARGV: gen, counters, token, from, built_ttl_ms, nb, then per bucket: start, ttl_ms, r,
/// i, o, c, oldest (''). Returns `gen OK` or `gen LOST`.
const INSTALL: &str = r"
local ck, token, from, built_ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', G .. 'building:' .. ck) ~= token then return {gen, 'LOST'} end
local nb = tonumber(ARGV[6])
local pos = 7
for b = 1, nb do
  local bk = G .. 'b:' .. ck .. ':' .. ARGV[pos]
  redis.call('DEL', bk)
  if ARGV[pos + 6] ~= '' then
    redis.call('HSET', bk, 'r', ARGV[pos + 2], 'i', ARGV[pos + 3], 'o', ARGV[pos + 4],
      'c', ARGV[pos + 5], 't', ARGV[pos + 6])
    redis.call('PEXPIRE', bk, ARGV[pos + 1])
  end
  pos = pos + 7
end
redis.call('SET', G .. 'built:' .. ck, from, 'PX', built_ttl)
redis.call('DEL', G .. 'building:' .. ck)
return {gen, 'OK'}
";

/// Catches up after this process could not reach Redis while recording usage: drops the
/// reservations it committed meanwhile and marks the counters that missed usage unbuilt
/// (ending a rebuild in progress), so that they are rebuilt from the database.
///
/// ARGV: gen, n, reservations..., counters... Returns `gen OK`.
const CATCH_UP: &str = r"
local n = tonumber(ARGV[2])
for k = 1, n do release(ARGV[2 + k]) end
for k = 3 + n, #ARGV do
  redis.call('DEL', G .. 'built:' .. ARGV[k], G .. 'building:' .. ARGV[k])
end
return {gen, 'OK'}
";

/// Drops a reservation. ARGV: gen, id. Returns `gen 1` or `gen 0`.
const RELEASE: &str = r"
return {gen, tostring(release(ARGV[2]))}
";

/// The scripts, compiled once (Redis caches them by SHA-1).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) reserve: redis::Script,
    pub(crate) commit_begin: redis::Script,
    pub(crate) commit_end: redis::Script,
    pub(crate) build_begin: redis::Script,
    pub(crate) drained: redis::Script,
    pub(crate) install: redis::Script,
    pub(crate) release: redis::Script,
    pub(crate) catch_up: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let s = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            reserve: s(RESERVE),
            commit_begin: s(COMMIT_BEGIN),
            commit_end: s(COMMIT_END),
            build_begin: s(BUILD_BEGIN),
            drained: s(DRAINED),
            install: s(INSTALL),
            release: s(RELEASE),
            catch_up: s(CATCH_UP),
        }
    }
}
