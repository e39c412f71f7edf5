-- Shared helpers, prepended to every wasmq script (see src/queue/scripts.rs). Not a script by itself.
--
-- Conventions of all scripts:
--   * ARGV[1] is the queue's key base `P:{Q}:` so that per-task keys (`task:<seq>`, `done:<seq>`,
--     `unique:<key>`, `p:<level>`) are built on the same hash tag, hence the same Cluster slot, as
--     the KEYS.
--   * ARGV[2] is a clock offset in ms, 0 except in tests that drive scripts at a chosen time.
--     Scripts read the time from the Redis server (TIME, before any write; Redis 7 replicates a
--     script's effects, not the script), so leases and due times never depend on the clocks of
--     the hosts that call them agreeing.
--   * A task's `state` field is one of: pending, delayed, blocked, active, succeeded, dead, cancelled,
--     expired (FINISHED below names the finished ones).
--   * JSON is built with cjson; 64-bit values (ms and µs times) travel in it as strings, since
--     cjson prints large numbers in exponent form.

local BASE = ARGV[1]
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + (tonumber(ARGV[2]) or 0)
end
-- Passed to Redis as a string: a Lua number would be formatted with %.17g on every call.
local NOW_S = string.format('%d', NOW)

-- The finished states: each has its index zset P:{Q}:<state> (by finish time) and retention.
local FINISHED = {succeeded = true, dead = true, cancelled = true, expired = true}

-- Most attempt errors a task keeps (`err:<n>` fields; older ones are dropped as new ones come).
local MAX_ERRORS = 16

local function task_key(seq) return BASE .. 'task:' .. seq end

-- The key prefix of a group's pool and rate window, P:{Q}:g:<group>: ('' or nil: the queue's
-- own, P:{Q}:). See Groups below.
local function pool_prefix(group)
  if group and group ~= '' then return BASE .. 'g:' .. group .. ':' end
  return BASE
end

-- Adds `by` to a numeric hash field and returns the new value. Unlike a bare HINCRBY it cannot
-- fail on a field that was overwritten with junk (the junk counts as 0): a script that fails
-- half-way leaves its earlier writes in place, so scripts must not fail on bad data. One call
-- when the field is sound (the usual case), two when it is not.
local function hincr(key, field, by)
  local n = redis.pcall('HINCRBY', key, field, by)
  if type(n) == 'number' then return n end
  redis.call('HSET', key, field, by)
  return by
end

-- True when `key` holds a hash (a task key overwritten with another type is treated as gone).
local function is_hash(key)
  return redis.call('TYPE', key).ok == 'hash'
end

-- Pending score for the `wsjf` policy (weighted shortest job first, Smith's rule) with aging.
-- A task's "virtual deadline" is its enqueue time plus its expected run time divided by its
-- weight, scaled by `stretch` and capped at `max_wait_ms`: the lowest deadline runs first. Among
-- tasks enqueued together the order is exactly Smith's rule (est / weight ascending); a task is
-- never overtaken by tasks enqueued more than `max_wait_ms` after it, so nothing starves.
-- The weight is max(prio, 1): priorities below 1 count as 1.
local function wsjf_score(created_ms, est_us, prio, stretch, max_wait_ms)
  local weight = prio
  if weight < 1 then weight = 1 end
  local wait = (est_us / 1000.0) * stretch / weight
  if wait > max_wait_ms then wait = max_wait_ms end
  return created_ms + math.floor(wait)
end

-- The queue's policy settings from its meta hash. No policy means `priority`; `wasmq queue policy`
-- writes every wsjf setting along with the policy, so they are there whenever wsjf is (a field
-- removed by hand counts as 0). The same read brings the queue's flow-control limits (`wasmq queue
-- limit`): `limit_concurrency` (most tasks active at once) and `limit_rate` tasks started per
-- `limit_rate_ms` (0 or absent: no limit), the same per group (`limit_group_*`), and `grouped`,
-- set once a task with a group was enqueued (see Groups below), so that a queue without limits or
-- groups pays nothing more than absent fields in one HMGET.
local GROUPED = false
local function queue_policy(meta_key)
  local m = redis.call('HMGET', meta_key, 'policy', 'stretch', 'max_wait_ms', 'default_estimate_us', 'limit_concurrency', 'limit_rate', 'limit_rate_ms',
    'grouped', 'limit_group_concurrency', 'limit_group_rate', 'limit_group_rate_ms')
  local conc, rate, rate_ms = tonumber(m[5]) or 0, tonumber(m[6]) or 0, tonumber(m[7]) or 0
  local gconc, grate, grate_ms = tonumber(m[9]) or 0, tonumber(m[10]) or 0, tonumber(m[11]) or 0
  if rate_ms <= 0 then rate = 0 end
  if grate_ms <= 0 then grate = 0 end
  -- Script-wide: a pool turned on in this script holds for every policy table read before it.
  GROUPED = GROUPED or m[8] == '1'
  return {
    policy = m[1] or 'priority',
    stretch = tonumber(m[2]) or 0,
    max_wait_ms = tonumber(m[3]) or 0,
    default_est_us = tonumber(m[4]) or 0,
    concurrency = conc,
    rate = rate,
    rate_ms = rate_ms,
    grouped = GROUPED,
    group_concurrency = gconc,
    group_rate = grate,
    group_rate_ms = grate_ms,
    limited = conc > 0 or rate > 0 or gconc > 0 or grate > 0,
  }
end

-- The rate limit is an exact sliding window: no more than `rate` claims in any `rate_ms` window
-- (a token bucket would let up to 2 * rate - 1 through in one). P:{Q}:rate is a list of
-- `<ms>:<count>` entries, one per claim batch (per millisecond), oldest first, and the stats
-- field `rate_window` their running total. Entries that left the window are dropped from the head
-- as claims come: each entry is pushed once and popped once, so the cost is O(1) amortised per
-- claim, and the list never holds more than min(rate, rate_ms) entries.
local RATE_KEY = BASE .. 'rate'
local function rate_entry(e)
  local t, c = string.match(e, '^(%d+):(%d+)$')
  return tonumber(t) or 0, tonumber(c) or 0
end

-- How many tasks may start now under the rate limit, and when none may: how many ms until the
-- oldest entry leaves the window (the earliest time more room can come).
local function rate_room(pol, stats_key)
  local total = tonumber(redis.call('HGET', stats_key, 'rate_window')) or 0
  local before = total
  local horizon = NOW - pol.rate_ms
  local wait = 0
  while true do
    local head = redis.call('LINDEX', RATE_KEY, 0)
    if not head then
      total = 0
      break
    end
    local t, c = rate_entry(head)
    if t > horizon then
      wait = t - horizon
      break
    end
    redis.call('LPOP', RATE_KEY)
    total = total - c
  end
  if total < 0 then total = 0 end
  if total ~= before then redis.call('HSET', stats_key, 'rate_window', total) end
  local room = pol.rate - total
  if room > 0 then return room, 0 end
  return 0, math.max(wait, 1)
end

-- Records `n` claims made now in the rate window (merged into the last entry when it is of the
-- same millisecond).
local function rate_record(stats_key, n)
  local tail = redis.call('LINDEX', RATE_KEY, -1)
  if tail then
    local t, c = rate_entry(tail)
    if t == NOW then
      redis.call('LSET', RATE_KEY, -1, NOW_S .. ':' .. (c + n))
      hincr(stats_key, 'rate_window', n)
      return
    end
  end
  redis.call('RPUSH', RATE_KEY, NOW_S .. ':' .. n)
  hincr(stats_key, 'rate_window', n)
end

-- A group's rate window (`queue limit --group-rate`) is simpler, as a group is claimed one task
-- per turn: the list P:{Q}:g:<group>:rate holds the claim time (ms) of each of its tasks started
-- in the window, oldest first, so its length is the count (at most the limit). It expires one
-- window after the group's last claim, when every entry has left the window anyway: groups that
-- come and go leave nothing behind.
local function group_rate_key(group) return pool_prefix(group) .. 'rate' end

-- As rate_room, for a group's window.
local function group_rate_room(group, rate, rate_ms)
  local list = group_rate_key(group)
  local horizon = NOW - rate_ms
  while true do
    local head = redis.call('LINDEX', list, 0)
    if not head then return rate, 0 end
    local t = tonumber(head) or 0
    if t > horizon then
      local room = rate - redis.call('LLEN', list)
      if room > 0 then return room, 0 end
      return 0, math.max(t - horizon, 1)
    end
    redis.call('LPOP', list)
  end
end

-- Records one task of a group started now.
local function group_rate_record(group, rate_ms)
  local list = group_rate_key(group)
  redis.call('RPUSH', list, NOW_S)
  redis.call('PEXPIRE', list, rate_ms)
end

-- Task expiry (`enqueue --expires`): a task with an `expires` field (Unix ms) is in the zset
-- P:{Q}:expiring, scored by that time, while it waits (pending, delayed, blocked); claims take it
-- out, and it comes back whenever the task waits again (a retry, a lease that expired, a
-- hand-back, `dead retry`). reap.lua sweeps the zset by due time (a worker's reaper runs on a
-- paused queue too); a claim never starts a task past its expiry either, but expires it.
local EXPIRING_KEY = BASE .. 'expiring'

-- The wsjf score of a task: its own estimate (given at enqueue) wins over the learned per-module
-- mean in `estimates_key`, which wins over the queue's default.
local function pending_score(pol, estimates_key, tkey)
  local f = redis.call('HMGET', tkey, 'priority', 'created', 'estimate_us', 'module')
  local est = tonumber(f[3])
  if not est and f[4] then est = tonumber(redis.call('HGET', estimates_key, f[4])) end
  return wsjf_score(tonumber(f[2]) or 0, est or pol.default_est_us, tonumber(f[1]) or 0, pol.stretch, pol.max_wait_ms)
end

-- Pending tasks live in one of two structures, by the queue's policy:
--   priority, fifo: one list per priority level, P:{Q}:p:<level> (FIFO within the level), and
--     the zset P:{Q}:levels of the non-empty levels (score -level: the highest first). fifo uses
--     level 0 only. O(1) per task, and a list entry costs a few bytes.
--   wsjf: the zset P:{Q}:pending, scored by virtual deadline.
-- Tasks left in the other structure after a policy change (see repolicy.lua) are still found:
-- they come after the current structure's.
-- A task cancelled while it waits in a list stays there as a tombstone (removing it would scan
-- the list): its state is no longer `pending`, claims skip it, and the `tombstones` counter of
-- the queue's stats hash keeps the pending count exact.
--
-- Groups (`enqueue --group`): a task with a group waits in its group's own pool, one zset
-- P:{Q}:g:<group>:pending whatever the policy: scored by the wsjf deadline under wsjf, else by
-- -priority * 2^32 + seq (the highest priority first, FIFO within it; exact below 2^53), so
-- that within a group the queue's policy order holds and a claim pops it with one ZPOPMIN (a
-- task that goes back keeps its old place; a cancel removes it, no tombstone). Tasks without a
-- group are in the queue's pool, the group '' below. The stats field `grouped_pending` counts
-- the entries of all group pools, so that the pending count needs no walk over the groups.
-- Once a queue has had a grouped task (meta `grouped`), claims take tasks round-robin across
-- the groups with work: the list P:{Q}:groups:ready is the rotation, each group in it once;
-- P:{Q}:groups:state says where a group is (`ready`: in the rotation; `parked`: at its
-- concurrency limit; `rate`: its rate window is full, in the zset P:{Q}:groups:rate-parked by
-- when it frees; absent: idle, no work), so that a push never duplicates a group.
-- P:{Q}:groups:active counts each group's active tasks. See claim.lua.
local GROUPS_READY = BASE .. 'groups:ready'
local GROUPS_STATE = BASE .. 'groups:state'
local GROUPS_ACTIVE = BASE .. 'groups:active'
local GROUPS_RATE_PARKED = BASE .. 'groups:rate-parked'
local STATS_KEY = BASE .. 'stats'

-- A group has work: it joins the rotation unless it is in it, or parked, already.
local function join_rotation(group)
  if redis.call('HSETNX', GROUPS_STATE, group, 'ready') == 1 then
    redis.call('RPUSH', GROUPS_READY, group)
  end
end

-- True when the queue's own pool (the tasks without a group) holds entries.
local function own_pending()
  return redis.call('ZCARD', BASE .. 'pending') > 0 or redis.call('ZCARD', BASE .. 'levels') > 0
end

-- The first grouped task of a queue turns the rotation on (for good); the queue's own pool joins
-- it if it has work, so that tasks without a group take their turn with the groups.
local function enable_groups()
  redis.call('HSET', BASE .. 'meta', 'grouped', '1')
  GROUPED = true
  if own_pending() then join_rotation('') end
end

local function pending_level(pol, prio)
  if pol.policy == 'fifo' then return 0 end
  return prio
end

-- The score of a task in a group's pool (see above).
local PRIO_SPAN = 4294967296
local function group_score(pol, seq, prio)
  if pol.policy == 'wsjf' then return pending_score(pol, BASE .. 'estimates', task_key(seq)) end
  return -pending_level(pol, prio) * PRIO_SPAN + tonumber(seq)
end

-- Adds a task to the pending structure of the queue's policy, in its group's pool; `front` puts
-- it ahead of its level (a task that was already claimed once goes back near where it was; in a
-- group's pool, at its old place).
local function push_pending(pol, seq, prio, front, group)
  local g = group or ''
  if g ~= '' then
    redis.call('ZADD', pool_prefix(g) .. 'pending', group_score(pol, seq, prio), seq)
    hincr(STATS_KEY, 'grouped_pending', 1)
    if not GROUPED then enable_groups() end
  elseif pol.policy == 'wsjf' then
    redis.call('ZADD', BASE .. 'pending', pending_score(pol, BASE .. 'estimates', task_key(seq)), seq)
  else
    local level = pending_level(pol, prio)
    redis.call(front and 'LPUSH' or 'RPUSH', BASE .. 'p:' .. level, seq)
    redis.call('ZADD', BASE .. 'levels', -level, level)
  end
  if GROUPED then join_rotation(g) end
end

-- Pops up to n entries {seq, level, group} from the queue's priority lists, highest level first
-- (only the queue's own pool has lists; a group's pool is a zset).
local function pop_lists(n, out)
  local levels_key = BASE .. 'levels'
  while #out < n do
    local lv = redis.call('ZRANGE', levels_key, 0, 0)
    if #lv == 0 then return end
    local list = BASE .. 'p:' .. lv[1]
    local got = redis.call('LPOP', list, n - #out)
    if got then
      for _, s in ipairs(got) do out[#out + 1] = {seq = s, level = lv[1], group = ''} end
    end
    if not got or redis.call('LLEN', list) == 0 then redis.call('ZREM', levels_key, lv[1]) end
  end
end

-- Pops up to n entries {seq, score, group} from a pool's zset.
local function pop_zset(prefix, group, n, out)
  if #out >= n then return end
  local p = redis.call('ZPOPMIN', prefix .. 'pending', n - #out)
  for i = 1, #p, 2 do out[#out + 1] = {seq = p[i], score = p[i + 1], group = group} end
end

-- Pops up to n pending entries of a group's pool (nil: the queue's) in the order of the
-- queue's policy. A group's entries leave `grouped_pending` here, or, when `tally` is given (a
-- claim popping one per group), in tally.grouped, for the caller to write once.
local function pop_pending(pol, n, group, tally)
  local g = group or ''
  local out = {}
  if g ~= '' then
    pop_zset(pool_prefix(g), g, n, out)
    if #out > 0 then
      if tally then
        tally.grouped = tally.grouped + #out
      else
        hincr(STATS_KEY, 'grouped_pending', -#out)
      end
    end
  elseif pol.policy == 'wsjf' then
    pop_zset(BASE, g, n, out)
    pop_lists(n, out)
  else
    pop_lists(n, out)
    pop_zset(BASE, g, n, out)
  end
  return out
end

-- Puts popped entries back where they were, ahead of everything else (entries[from..] in order).
local function unpop(entries, from)
  local grouped = 0
  for i = #entries, from, -1 do
    local e = entries[i]
    if e.level then
      redis.call('LPUSH', BASE .. 'p:' .. e.level, e.seq)
      redis.call('ZADD', BASE .. 'levels', -tonumber(e.level), e.level)
    else
      redis.call('ZADD', pool_prefix(e.group) .. 'pending', e.score, e.seq)
    end
    if e.group ~= '' then grouped = grouped + 1 end
  end
  if grouped > 0 then hincr(STATS_KEY, 'grouped_pending', grouped) end
end

-- True when a task may be ready to claim: in the queue's pool, or a group in the rotation.
local function any_pending()
  return own_pending() or redis.call('LLEN', GROUPS_READY) > 0
end

-- Takes a waiting task of `group` out of the pending structure: from a zset (O(log n)), or, in a
-- list, by leaving a tombstone (see above) instead of scanning the list. The caller changes the
-- task's state.
local function remove_pending(seq, group)
  local g = group or ''
  local removed = redis.call('ZREM', pool_prefix(g) .. 'pending', seq) == 1
  if g ~= '' then
    if removed then hincr(STATS_KEY, 'grouped_pending', -1) end
  elseif not removed then
    hincr(STATS_KEY, 'tombstones', 1)
  end
end

-- A task of `group` left `active` (finished, retried, handed back, lease expired): the group's
-- count goes down, and a group parked at its concurrency limit rejoins the rotation (at its
-- tail). Returns true when one did: a worker should look.
local function group_released(group)
  if not group or group == '' then return false end
  if hincr(GROUPS_ACTIVE, group, -1) <= 0 then redis.call('HDEL', GROUPS_ACTIVE, group) end
  if redis.call('HGET', GROUPS_STATE, group) == 'parked' then
    redis.call('HSET', GROUPS_STATE, group, 'ready')
    redis.call('RPUSH', GROUPS_READY, group)
    return true
  end
  return false
end

-- Wakes one idle worker of the queue, keeping the token list short: a token only says "look".
local function signal(signal_key)
  if redis.call('LLEN', signal_key) < 16 then
    redis.call('RPUSH', signal_key, '1')
  end
end

-- Tells `result --wait` clients that a task finished: one token that each woken waiter passes on
-- (the list expires a minute later, so a waiter that died costs nothing).
local function notify_waiters(seq, tkey)
  local done = BASE .. 'done:' .. seq
  redis.call('RPUSH', done, '1')
  redis.call('PEXPIRE', done, 60000)
  redis.call('HDEL', tkey, 'waiters')
end

-- Releases the unique key a finished task held, if it still points at this task.
local function release_unique(seq, unique)
  local k = BASE .. 'unique:' .. unique
  if redis.call('GET', k) == tostring(seq) then redis.call('DEL', k) end
end

-- Records one failed attempt in its own field `err:<n>` (an append, not a rewrite of the history),
-- keeping the last MAX_ERRORS. `attempt` is the attempt the error belongs to.
local function append_error(tkey, attempt, kind, message, worker)
  local n = redis.call('HINCRBY', tkey, 'errn', 1)
  local e = {attempt = tonumber(attempt) or 0, kind = kind, message = message, at = NOW_S}
  if worker and worker ~= '' then e.worker = worker end
  redis.call('HSET', tkey, 'err:' .. n, cjson.encode(e))
  if n > MAX_ERRORS then redis.call('HDEL', tkey, 'err:' .. (n - MAX_ERRORS)) end
end

-- The reason a task's `cancel` flag holds (older writers stored '1': a plain request).
local function cancel_reason(flag)
  if not flag or flag == '1' then return 'requested' end
  return flag
end

-- Fields a task drops when it goes back to pending: they describe the claim that ended.
local CLAIM_FIELDS = {'worker', 'started', 'claimed', 'running'}

-- Puts a task (claimed, delayed or dead) back in the pending structure; `front` puts it ahead of
-- its level. The one place where a task becomes pending again.
local function back_to_pending(pol, seq, front)
  local tkey = task_key(seq)
  redis.call('HSET', tkey, 'state', 'pending')
  redis.call('HDEL', tkey, unpack(CLAIM_FIELDS))
  local f = redis.call('HMGET', tkey, 'priority', 'expires', 'group')
  push_pending(pol, seq, tonumber(f[1]) or 0, front, f[3])
  -- Waiting again: its expiry applies again (swept at once when it passed meanwhile).
  if f[2] then redis.call('ZADD', EXPIRING_KEY, tonumber(f[2]) or 0, seq) end
end

-- Retention of finished tasks: from the queue's settings (written by `wasmq queue retention`),
-- or else from `fallback`, the caller's defaults as
-- "succeeded_age_ms,succeeded_count,dead_age_ms,dead_count,cancelled_age_ms,cancelled_count,
-- expired_age_ms,expired_count" (0: no limit).
local RETENTION_FIELDS = {'ret_succeeded_age_ms', 'ret_succeeded_count', 'ret_dead_age_ms', 'ret_dead_count',
  'ret_cancelled_age_ms', 'ret_cancelled_count', 'ret_expired_age_ms', 'ret_expired_count'}
local function retention(meta_key, fallback)
  local m = redis.call('HMGET', meta_key, unpack(RETENTION_FIELDS))
  local f = {}
  for v in string.gmatch(fallback or '', '[^,]+') do f[#f + 1] = tonumber(v) or 0 end
  local function pick(i) return tonumber(m[i]) or f[i] or 0 end
  return {
    succeeded = {age = pick(1), count = pick(2)},
    dead = {age = pick(3), count = pick(4)},
    cancelled = {age = pick(5), count = pick(6)},
    -- Settings written before the expired state existed: expired tasks follow cancelled ones.
    expired = {age = tonumber(m[7]) or tonumber(m[5]) or f[7] or 0, count = tonumber(m[8]) or tonumber(m[6]) or f[8] or 0},
  }
end

-- Deletes finished tasks of one state, oldest first: those that finished at or before `cutoff` (Unix
-- ms; nil: none by age), then those over `count` (0: no limit). At most `budget` per call, so that
-- the cost is O(1) amortised per finished task (callers pass a budget of a small multiple of what
-- they just finished). The index entry and the task hash go together: neither outlives the other.
local function delete_finished(set_key, cutoff, count, budget)
  local n = 0
  local kept = {}
  -- A finished task that unfinished dependents still need (their input, their readiness) moves to
  -- P:{Q}:kept instead, and returns to its index when the last of them finishes.
  local function delete(seq)
    local f = redis.call('HMGET', task_key(seq), 'open_deps', 'flow')
    if f[2] and redis.call('EXISTS', BASE .. 'flow:' .. f[2]) == 1 then
      -- Removed with its flow, as one unit (trim_flows); only its index entry goes now.
      return
    elseif (tonumber(f[1]) or 0) > 0 then
      kept[#kept + 1] = NOW_S
      kept[#kept + 1] = seq
    else
      redis.call('DEL', task_key(seq))
    end
  end
  if cutoff then
    local old = redis.call('ZRANGEBYSCORE', set_key, '-inf', cutoff, 'LIMIT', 0, budget)
    for _, seq in ipairs(old) do delete(seq) end
    if #old > 0 then redis.call('ZREM', set_key, unpack(old)) end
    n = #old
  end
  if count > 0 and n < budget then
    local over = redis.call('ZCARD', set_key) - count
    if over > 0 then
      local p = redis.call('ZPOPMIN', set_key, math.min(over, budget - n))
      for i = 1, #p, 2 do delete(p[i]) end
      n = n + #p / 2
    end
  end
  if #kept > 0 then redis.call('ZADD', BASE .. 'kept', unpack(kept)) end
  return n
end

-- Applies one state's retention limits {age, count} (see `retention`).
local function trim_finished(set_key, limits, budget)
  return delete_finished(set_key, limits.age > 0 and NOW - limits.age or nil, limits.count, budget)
end

-- Finishing tasks in a batch: `finish` records one task, `flush` does the work shared by the
-- batch once (index sets, counters, module references, retention, wake-up).
--   K: the script's keys by name: succeeded, dead, cancelled, stats, modrefs, meta, signal
--   (expired is built here: P:{Q}:expired)
local function new_batch(K, fallback_retention)
  K.expired = K.expired or BASE .. 'expired'
  return {K = K, fallback = fallback_retention, sets = {}, counts = {}, unrefs = {}, wake = false}
end

local function count(b, name, by) b.counts[name] = (b.counts[name] or 0) + by end

-- Histograms for `/metrics`, kept as running totals in the queue's stats hash: per observation one
-- bucket field `<name>_b<i>` (not cumulative; the reader sums them), `<name>_sum_us` and
-- `<name>_count`. O(1) per task, no list of samples. The bucket bounds (µs) are the Rust side's
-- `HISTOGRAM_BOUNDS_US`; keep the two in step.
local HIST_BOUNDS_US = {5000, 25000, 100000, 500000, 1000000, 5000000, 30000000, 120000000, 600000000, 3600000000}
local function hist_bucket(us)
  for i, bound in ipairs(HIST_BOUNDS_US) do
    if us <= bound then return i end
  end
  return #HIST_BOUNDS_US + 1
end
-- Adds one observation to a batch's counts (flushed with them).
local function observe(b, name, us)
  if not us or us < 0 then return end
  count(b, name .. '_b' .. hist_bucket(us), 1)
  count(b, name .. '_sum_us', math.floor(us))
  count(b, name .. '_count', 1)
end

-- Dependencies (`enqueue --after`). A dependent stores its parents' seqs (`after`), how many of
-- them have not succeeded (`waiting`) and its policy for a dead parent (`on_parent_failure`); each
-- parent has a set P:{Q}:deps:<seq> of its dependents, a flag `deps` while it has any, and a count
-- `open_deps` of dependents that have not finished (retention keeps the parent while it is not 0).
-- Resolving a parent's end costs O(its dependents): no polling, no scan.

local finish

-- A blocked dependent whose parents have all succeeded becomes ready: pending, or delayed when it
-- was enqueued with a later due time.
local function unblock(b, seq, tkey)
  redis.call('ZREM', BASE .. 'blocked', seq)
  local due = tonumber(redis.call('HGET', tkey, 'due')) or 0
  if due > NOW then
    redis.call('HSET', tkey, 'state', 'delayed')
    redis.call('ZADD', BASE .. 'delayed', due, seq)
  else
    b.pol = b.pol or queue_policy(b.K.meta)
    redis.call('HSET', tkey, 'state', 'pending')
    local f = redis.call('HMGET', tkey, 'priority', 'group')
    push_pending(b.pol, seq, tonumber(f[1]) or 0, false, f[2])
  end
  b.wake = true
end

-- What a parent's end means for its dependents.
local function resolve_dependents(b, seq, state)
  local deps_key = BASE .. 'deps:' .. seq
  for _, d in ipairs(redis.call('SMEMBERS', deps_key)) do
    local dkey = task_key(d)
    local f = redis.call('HMGET', dkey, 'state', 'on_parent_failure')
    if f[1] == 'blocked' then
      if state == 'succeeded' then
        if hincr(dkey, 'waiting', -1) <= 0 then unblock(b, d, dkey) end
      elseif state == 'cancelled' then
        redis.call('ZREM', BASE .. 'blocked', d)
        finish(b, d, dkey, 'cancelled', {'cancel_reason', 'parent_cancelled'}, nil)
      elseif state == 'expired' then
        -- An expired parent never ran and never will: like a cancelled one, whatever the
        -- dependent's policy for a dead parent.
        redis.call('ZREM', BASE .. 'blocked', d)
        finish(b, d, dkey, 'cancelled', {'cancel_reason', 'parent_expired'}, nil)
      elseif state == 'dead' and f[2] == 'cancel' then
        redis.call('ZREM', BASE .. 'blocked', d)
        finish(b, d, dkey, 'cancelled', {'cancel_reason', 'parent_dead'}, nil)
      elseif state == 'dead' and f[2] == 'ignore' then
        -- The dependent runs without this parent (its output is null in the input).
        if hincr(dkey, 'waiting', -1) <= 0 then unblock(b, d, dkey) end
      end
    end
  end
  -- A dead parent keeps its dependents: `dead retry` of it lets them continue (those that
  -- ignore it have gone on already).
  if state ~= 'dead' then
    redis.call('DEL', deps_key)
    redis.call('HDEL', task_key(seq), 'deps')
  end
end

-- A dependent finished: its parents need not be kept for it any more.
local function release_parents(after)
  for p in string.gmatch(after, '[^,]+') do
    local pkey = task_key(p)
    if redis.call('EXISTS', pkey) == 1 and hincr(pkey, 'open_deps', -1) <= 0 then
      redis.call('HDEL', pkey, 'open_deps')
      -- Kept by retention for this dependent: back to its index, trimmed from there as usual.
      local at = redis.call('ZSCORE', BASE .. 'kept', p)
      if at then
        redis.call('ZREM', BASE .. 'kept', p)
        local st = redis.call('HGET', pkey, 'state')
        if FINISHED[st] then redis.call('ZADD', BASE .. st, at, p) end
      end
    end
  end
end

-- Flows (`wasmq map`): a flow is a hash P:{Q}:flow:<n> (`state`: building, running, succeeded,
-- failed, cancelled; `children`; `root`, the seq of its last reducer or 0; `policy` for a dead
-- child: block, cancel or ignore) with counters of its members' ends and of those `active`, and
-- lists `:children` and `:reducers` of its members. Each member has a field `flow`. The flow's
-- state follows from its members' ends here, O(1) per finished member.
--
-- Retention: a member is never deleted on its own while its flow exists (delete_finished). A flow
-- not ended is in P:{Q}:flows:open; one that ended is in P:{Q}:flows:<end> by its end time, and P:{Q}:flows:members counts the members
-- of the flows there by end; trim_flows removes old flows with all their members, as one unit,
-- under the queue's limits for the matching task state (succeeded; failed as dead; cancelled).
local FLOW_RETENTION = {succeeded = 'succeeded', failed = 'dead', cancelled = 'cancelled'}

local function flow_size(fkey)
  return (tonumber(redis.call('HGET', fkey, 'children')) or 0) + redis.call('LLEN', fkey .. ':reducers')
end

-- A flow reaches an end (succeeded, failed, cancelled); `size` records how many members it
-- counts for in P:{Q}:flows:members.
local function flow_ended(fkey, n, state)
  local size = flow_size(fkey)
  redis.call('HSET', fkey, 'state', state, 'finished', NOW_S, 'size', size)
  redis.call('ZREM', BASE .. 'flows:open', n)
  redis.call('ZADD', BASE .. 'flows:' .. state, NOW, n)
  hincr(BASE .. 'flows:members', state, size)
end

-- A failed flow runs again (`dead retry` of its last dead member).
local function flow_reopened(fkey, n)
  if redis.call('ZREM', BASE .. 'flows:failed', n) == 1 then
    hincr(BASE .. 'flows:members', 'failed', -(tonumber(redis.call('HGET', fkey, 'size')) or 0))
  end
  redis.call('HSET', fkey, 'state', 'running')
  redis.call('HDEL', fkey, 'finished', 'size')
  redis.call('ZADD', BASE .. 'flows:open', NOW, n)
end

local function flow_member_finished(flow, seq, state)
  local fkey = BASE .. 'flow:' .. flow
  -- A member that outlived its flow (still running when a failed flow was removed) is on its own.
  if redis.call('EXISTS', fkey) == 0 then return end
  local n = redis.call('HINCRBY', fkey, state, 1)
  local f = redis.call('HMGET', fkey, 'state', 'children', 'root', 'policy', 'succeeded', 'dead')
  if f[1] == 'cancelled' or f[1] == 'succeeded' then return end
  local root = tonumber(f[3]) or 0
  local is_root = root > 0 and tostring(root) == tostring(seq)
  -- A dead root fails the flow whatever the policy: there is no result to give.
  if state == 'dead' and (f[4] ~= 'ignore' or is_root) then
    if f[1] ~= 'failed' and f[1] ~= 'building' then flow_ended(fkey, flow, 'failed')
    elseif f[1] == 'building' then redis.call('HSET', fkey, 'state', 'failed') end
  elseif is_root then
    if state == 'succeeded' then flow_ended(fkey, flow, 'succeeded')
    elseif state == 'cancelled' and f[1] ~= 'failed' then flow_ended(fkey, flow, 'cancelled') end
  elseif root == 0 and f[1] == 'running' then
    local done = (tonumber(f[5]) or 0) + ((f[4] == 'ignore') and (tonumber(f[6]) or 0) or 0)
    if done >= (tonumber(f[2]) or 0) then flow_ended(fkey, flow, 'succeeded') end
  end
  return n
end

-- Removes up to `budget` members of an ended flow, and the flow with its last one. Returns
-- whether the flow is gone and how many members went. A member that is still pending, delayed or
-- active (a sibling of the child that failed the flow) leaves the flow and finishes on its own.
local function delete_flow(n, ended, budget)
  local fkey = BASE .. 'flow:' .. n
  local removed = 0
  for _, list in ipairs({fkey .. ':children', fkey .. ':reducers'}) do
    while removed < budget do
      local seqs = redis.call('LPOP', list, math.min(budget - removed, 1000))
      if not seqs then break end
      for _, seq in ipairs(seqs) do
        local tkey = task_key(seq)
        local st = redis.call('HGET', tkey, 'state')
        if st == 'pending' or st == 'delayed' or st == 'active' then
          redis.call('HDEL', tkey, 'flow')
        else
          if st == 'blocked' then
            redis.call('ZREM', BASE .. 'blocked', seq)
            redis.call('ZREM', EXPIRING_KEY, seq)
          end
          for _, set in ipairs({'succeeded', 'dead', 'cancelled', 'expired', 'kept'}) do redis.call('ZREM', BASE .. set, seq) end
          redis.call('DEL', tkey, BASE .. 'deps:' .. seq)
        end
        removed = removed + 1
      end
    end
  end
  if redis.call('EXISTS', fkey .. ':children', fkey .. ':reducers') > 0 then return false, removed end
  hincr(BASE .. 'flows:members', ended, -(tonumber(redis.call('HGET', fkey, 'size')) or 0))
  redis.call('DEL', fkey)
  redis.call('ZREM', BASE .. 'flows:' .. ended, n)
  return true, removed
end

-- Applies the queue's retention to ended flows: those older than their state's age, then the
-- oldest while their members exceed the state's count. At most about `budget` members per call.
local function trim_flows(limits, budget)
  local removed = 0
  for ended, state in pairs(FLOW_RETENTION) do
    local lim = limits[state]
    local set = BASE .. 'flows:' .. ended
    while removed < budget do
      local oldest = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
      if not oldest[1] then break end
      local old = lim.age > 0 and tonumber(oldest[2]) <= NOW - lim.age
      local over = lim.count > 0 and (tonumber(redis.call('HGET', BASE .. 'flows:members', ended)) or 0) > lim.count
      if not (old or over) then break end
      local gone, r = delete_flow(oldest[1], ended, budget - removed)
      removed = removed + r
      if not gone then break end
    end
  end
  return removed
end

-- Moves a task into a finished state (succeeded, dead, cancelled or expired), writing `fields`
-- (a flat name, value list, may be empty) with it. `cur` holds what the caller read of the task
-- (module, unique_key, waiters, deps, after, flow, expires), or nil to read it here. Dependents are
-- resolved at once, in the same batch. A task that finishes while it waits leaves the expiring
-- zset (`expires` in `cur`; an active task left it at its claim).
finish = function(b, seq, tkey, state, fields, cur)
  if not cur then
    local f = redis.call('HMGET', tkey, 'module', 'unique_key', 'waiters', 'deps', 'after', 'flow', 'expires')
    cur = {module = f[1], unique_key = f[2], waiters = f[3], deps = f[4], after = f[5], flow = f[6], expires = f[7]}
  end
  if cur.expires then redis.call('ZREM', EXPIRING_KEY, seq) end
  fields[#fields + 1] = 'state'; fields[#fields + 1] = state
  fields[#fields + 1] = 'finished'; fields[#fields + 1] = NOW_S
  redis.call('HSET', tkey, unpack(fields))
  local set = b.sets[state]
  if not set then set = {}; b.sets[state] = set end
  set[#set + 1] = NOW_S
  set[#set + 1] = seq
  if cur.module then b.unrefs[cur.module] = (b.unrefs[cur.module] or 0) + 1 end
  if cur.unique_key then release_unique(seq, cur.unique_key) end
  if cur.waiters then notify_waiters(seq, tkey) end
  if cur.after then release_parents(cur.after) end
  -- In its flow an expired member counts as cancelled (it never ran, like a cancelled one).
  if cur.flow then flow_member_finished(cur.flow, seq, state == 'expired' and 'cancelled' or state) end
  if cur.deps then resolve_dependents(b, seq, state) end
  count(b, state, 1)
end

-- Per-minute counts of finished attempts for the dashboard's last-hour chart: a ring of 60 slots
-- in P:{Q}:minutes (fields `m<i>`: the minute that slot i holds, `s<i>` tasks succeeded, `f<i>`
-- attempts failed: dead and retried), so the hash never holds more than 180 fields and nothing
-- needs trimming. One read and at most two writes per batch, not per task.
local function count_minute(b)
  local s = b.counts.succeeded or 0
  local f = (b.counts.dead or 0) + (b.counts.retried or 0)
  if s == 0 and f == 0 then return end
  local key = BASE .. 'minutes'
  local minute = string.format('%d', math.floor(NOW / 60000))
  local i = tostring(tonumber(minute) % 60)
  if redis.call('HGET', key, 'm' .. i) ~= minute then
    redis.call('HSET', key, 'm' .. i, minute, 's' .. i, s, 'f' .. i, f)
  else
    if s > 0 then redis.call('HINCRBY', key, 's' .. i, s) end
    if f > 0 then redis.call('HINCRBY', key, 'f' .. i, f) end
  end
end

local function flush(b)
  local K = b.K
  count_minute(b)
  local limits = nil
  for state, set in pairs(b.sets) do
    redis.call('ZADD', K[state], unpack(set))
    limits = limits or retention(K.meta, b.fallback)
    trim_finished(K[state], limits[state], #set + 16)
  end
  for name, by in pairs(b.counts) do hincr(K.stats, name, by) end
  for module, n in pairs(b.unrefs) do
    if hincr(K.modrefs, module, -n) <= 0 then redis.call('HDEL', K.modrefs, module) end
  end
  if b.wake then signal(K.signal) end
end

-- Adds one task to a queue; shared by enqueue.lua and schedule_fire.lua.
--   K        the queue's keys by name: seq, pending, delayed, meta, stats, modrefs, signal, estimates,
--            and the finished sets (succeeded, dead, cancelled) for a task cancelled at once
--   due      Unix ms when the task becomes ready (<= NOW: at once)
--   unique   unique key or '' (unique_ms: how long it may be held; 0 = until the task ends)
--   extra    further task fields as a flat name, value list
--   deps     nil, or {after = 'seq,seq', policy = 'block' | 'cancel' | 'ignore'}: parents in this
--            queue. A parent that succeeded after spawning children (field `spawned`) brings
--            them along as parents (and theirs, transitively), after it in `after`.
--   seq      the task's number when it was reserved already (a spawned child), else nil: the
--            next of the queue's counter K.seq
--   expires  Unix ms after which the task, if still waiting, is finished as expired (nil or 0:
--            never); a time already past expires the task at once
-- Returns seq, is_new (0 when an unfinished task holds the unique key: its seq is returned), or
-- an error reply `UNKNOWNPARENT <seq>` (nothing written) when a parent does not exist, or
-- `TOOMANYPARENTS <n>` when the parents and their spawned descendants are over MAX_PARENTS.
local MAX_PARENTS = 10000
local function add_task(K, due, module, prio, unique, unique_ms, extra, deps, seq, expires)
  expires = tonumber(expires) or 0
  if unique ~= '' then
    local held = redis.call('GET', BASE .. 'unique:' .. unique)
    if held then
      local st = redis.call('HGET', task_key(held), 'state')
      if st == 'pending' or st == 'delayed' or st == 'active' or st == 'blocked' then
        return tonumber(held), 0
      end
    end
  end
  -- Parents: all must exist; those that finished count now.
  local parents, waiting, ended = {}, 0, nil
  if deps then
    local list = {}
    for p in string.gmatch(deps.after, '[^,]+') do list[#list + 1] = p end
    local named = #list
    local i = 1
    while i <= #list do
      local p = list[i]
      local f = redis.call('HMGET', task_key(p), 'state', 'spawned')
      local st = f[1]
      i = i + 1
      if not st and i - 1 <= named then return redis.error_reply('UNKNOWNPARENT ' .. p) end
      -- A spawned child that retention removed has finished long ago: nothing to wait for.
      if st then
        parents[#parents + 1] = {seq = p, state = st}
        if st == 'succeeded' and f[2] then
          for c in string.gmatch(f[2], '[^,]+') do list[#list + 1] = c end
          if #list > MAX_PARENTS then return redis.error_reply('TOOMANYPARENTS ' .. #list) end
        end
      end
    end
    if #list > named then
      local kept = {}
      for _, p in ipairs(parents) do kept[#kept + 1] = p.seq end
      deps.after = table.concat(kept, ',')
    end
  end
  for _, p in ipairs(parents) do
    local st = p.state
    if st == 'cancelled' then
      ended = 'parent_cancelled'
    elseif st == 'expired' then
      ended = 'parent_expired'
    elseif st == 'dead' and deps.policy == 'cancel' and not ended then
      ended = 'parent_dead'
    end
    if st ~= 'succeeded' and not (st == 'dead' and deps.policy == 'ignore') then waiting = waiting + 1 end
  end
  seq = seq or redis.call('INCR', K.seq)
  local tkey = task_key(seq)
  -- A member of a flow (field `flow`) joins its list in the same script, so that a flow's lists
  -- name exactly the tasks that exist: a reducer (it has parents) or a child.
  local group = nil
  for i = 1, #extra, 2 do
    if extra[i] == 'flow' then
      redis.call('RPUSH', BASE .. 'flow:' .. extra[i + 1] .. (deps and ':reducers' or ':children'), seq)
    elseif extra[i] == 'group' then
      group = extra[i + 1]
    end
  end
  local fields = {'module', module, 'created', NOW_S}
  -- Defaults are not stored: a pending task stays small.
  if prio ~= 0 then
    fields[#fields + 1] = 'priority'
    fields[#fields + 1] = prio
  end
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  if expires > 0 then
    fields[#fields + 1] = 'expires'
    fields[#fields + 1] = string.format('%d', expires)
  end
  if unique ~= '' then
    fields[#fields + 1] = 'unique_key'
    fields[#fields + 1] = unique
    local uk = BASE .. 'unique:' .. unique
    if unique_ms > 0 then
      redis.call('SET', uk, seq, 'PX', unique_ms)
    else
      redis.call('SET', uk, seq)
    end
  end
  if due > NOW then
    fields[#fields + 1] = 'due'
    fields[#fields + 1] = string.format('%d', due)
  end
  hincr(K.modrefs, module, 1)
  hincr(K.stats, 'enqueued', 1)
  if expires > 0 and expires <= NOW then
    -- Expired before it could wait (its parents are not told: it never depends on them).
    redis.call('HSET', tkey, unpack(fields))
    local b = new_batch(K, nil)
    finish(b, seq, tkey, 'expired', {}, {module = module, unique_key = unique ~= '' and unique or nil})
    flush(b)
    return seq, 1
  end
  if expires > 0 then redis.call('ZADD', EXPIRING_KEY, expires, seq) end
  if deps then
    fields[#fields + 1] = 'after'; fields[#fields + 1] = deps.after
    if deps.policy ~= 'block' then
      fields[#fields + 1] = 'on_parent_failure'; fields[#fields + 1] = deps.policy
    end
    if ended then
      -- A parent already ended so that this task never can run: it is cancelled at once.
      redis.call('HSET', tkey, unpack(fields))
      local b = new_batch(K, nil)
      finish(b, seq, tkey, 'cancelled', {'cancel_reason', ended}, {module = module, unique_key = unique ~= '' and unique or nil, expires = expires > 0 or nil})
      flush(b)
      return seq, 1
    end
    for _, p in ipairs(parents) do
      local pkey = task_key(p.seq)
      hincr(pkey, 'open_deps', 1)
      if p.state ~= 'succeeded' and not (p.state == 'dead' and deps.policy == 'ignore') then
        redis.call('SADD', BASE .. 'deps:' .. p.seq, seq)
        redis.call('HSET', pkey, 'deps', '1')
      end
    end
    if waiting > 0 then
      fields[#fields + 1] = 'waiting'; fields[#fields + 1] = waiting
      fields[#fields + 1] = 'state'; fields[#fields + 1] = 'blocked'
      redis.call('HSET', tkey, unpack(fields))
      redis.call('ZADD', BASE .. 'blocked', NOW, seq)
      return seq, 1
    end
  end
  fields[#fields + 1] = 'state'
  if due > NOW then
    fields[#fields + 1] = 'delayed'
    redis.call('HSET', tkey, unpack(fields))
    redis.call('ZADD', K.delayed, due, seq)
  else
    fields[#fields + 1] = 'pending'
    redis.call('HSET', tkey, unpack(fields))
    push_pending(queue_policy(K.meta), seq, prio, false, group)
  end
  -- Delayed tasks signal too: an idle worker then learns the new earliest due time.
  signal(K.signal)
  return seq, 1
end

-- Commits the children a succeeded attempt spawned (host API `spawn`), before the spawner is
-- finished: each becomes a task with the number reserved when it was spawned, in the spawner's
-- flow if it has one. The spawner's blocked dependents wait for them too: each child joins their
-- `after` (an `--input-from-after` dependent gets the children's outputs after the spawner's),
-- their `waiting` count, and the child's `deps:` set. O(children × dependents).
--   kids  list of {seq, module, prio, delay (ms), fields (flat name, value list)}
-- Children of a spawner whose flow was cancelled are not committed. Children join the
-- spawner's group (`cur.group`).
local function commit_children(K, seq, tkey, cur, kids)
  if cur.flow and redis.call('HGET', BASE .. 'flow:' .. cur.flow, 'state') == 'cancelled' then return end
  local seqs = {}
  for _, c in ipairs(kids) do
    if cur.flow then
      c.fields[#c.fields + 1] = 'flow'
      c.fields[#c.fields + 1] = cur.flow
    end
    -- A child is work of the spawner's tenant: it waits in the spawner's group.
    if cur.group then
      c.fields[#c.fields + 1] = 'group'
      c.fields[#c.fields + 1] = cur.group
    end
    add_task(K, NOW + c.delay, c.module, c.prio, '', 0, c.fields, nil, c.seq)
    seqs[#seqs + 1] = c.seq
  end
  if cur.flow then hincr(BASE .. 'flow:' .. cur.flow, 'children', #seqs) end
  local list = table.concat(seqs, ',')
  redis.call('HSET', tkey, 'spawned', list)
  if not cur.deps then return end
  local waited = false
  for _, d in ipairs(redis.call('SMEMBERS', BASE .. 'deps:' .. seq)) do
    local dkey = task_key(d)
    local f = redis.call('HMGET', dkey, 'state', 'after')
    if f[1] == 'blocked' then
      redis.call('HSET', dkey, 'after', f[2] and (f[2] .. ',' .. list) or list)
      hincr(dkey, 'waiting', #seqs)
      for _, c in ipairs(seqs) do
        redis.call('SADD', BASE .. 'deps:' .. c, d)
        hincr(task_key(c), 'open_deps', 1)
      end
      waited = true
    end
  end
  if waited then
    for _, c in ipairs(seqs) do redis.call('HSET', task_key(c), 'deps', '1') end
  end
end

-- When a task becomes due: the later of an absolute time and a delay from now (both optional).
local function due_time(due_at, delay_ms)
  local due = tonumber(due_at) or 0
  local d = tonumber(delay_ms) or 0
  if d > 0 and NOW + d > due then due = NOW + d end
  return due
end

-- When a task expires (Unix ms, 0: never): an absolute time, or a duration from now.
local function expiry_time(at, in_ms)
  local a, d = tonumber(at) or 0, tonumber(in_ms) or 0
  if a > 0 then return a end
  if d > 0 then return NOW + d end
  return 0
end
