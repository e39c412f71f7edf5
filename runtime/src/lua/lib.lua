-- Shared helpers, prepended to every wasmq script (see src/scripts.rs). Not a script by itself.
--
-- Conventions of all scripts:
--   * ARGV[1] is the queue's key base `P:{Q}:` so that per-task keys (`task:<seq>`, `done:<seq>`,
--     `unique:<key>`) are built on the same hash tag, hence the same Cluster slot, as the KEYS.
--   * Times are Unix milliseconds given by the caller (one clock per call, no TIME command, so
--     scripts stay deterministic for replication).
--   * A task's `state` field is one of: pending, delayed, active, succeeded, dead, cancelled.

-- Adds `by` to a numeric hash field. Unlike HINCRBY it cannot fail on a field that was
-- overwritten with junk (the junk counts as 0): a script that fails half-way leaves its earlier
-- writes in place, so scripts must not fail on bad data.
local function hincr(key, field, by)
  local n = (tonumber(redis.call('HGET', key, field)) or 0) + by
  redis.call('HSET', key, field, n)
  return n
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

-- The queue's policy settings from its meta hash: policy, stretch, max wait, default estimate.
local function queue_policy(meta_key)
  local m = redis.call('HMGET', meta_key, 'policy', 'stretch', 'max_wait_ms', 'default_estimate_us')
  return {
    policy = m[1] or 'priority',
    stretch = tonumber(m[2]) or 1000,
    max_wait_ms = tonumber(m[3]) or 600000,
    default_est_us = tonumber(m[4]) or 100000,
  }
end

-- The wsjf score of a task: its own estimate (given at enqueue) wins over the learned per-module
-- mean in `estimates_key`, which wins over the queue's default.
local function pending_score(pol, estimates_key, task_key, seq)
  local f = redis.call('HMGET', task_key, 'priority', 'created', 'estimate_us', 'module')
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
local function pending_level(pol, prio)
  if pol.policy == 'fifo' then return 0 end
  return prio
end

-- Adds a task to the pending structure of the queue's policy; `front` puts it ahead of its level
-- (a task that was already claimed once goes back near where it was).
local function push_pending(base, pol, pending_key, estimates_key, task_key, seq, prio, front)
  if pol.policy == 'wsjf' then
    redis.call('ZADD', pending_key, pending_score(pol, estimates_key, task_key, tonumber(seq)), seq)
  else
    local level = pending_level(pol, prio)
    redis.call(front and 'LPUSH' or 'RPUSH', base .. 'p:' .. level, seq)
    redis.call('ZADD', base .. 'levels', -level, level)
  end
end

local function pop_lists(base, n, out)
  local levels_key = base .. 'levels'
  while #out < n do
    local lv = redis.call('ZRANGE', levels_key, 0, 0)
    if #lv == 0 then return end
    local list = base .. 'p:' .. lv[1]
    local got = redis.call('LPOP', list, n - #out)
    if got then
      for _, s in ipairs(got) do out[#out + 1] = s end
    end
    if not got or redis.call('LLEN', list) == 0 then redis.call('ZREM', levels_key, lv[1]) end
  end
end

local function pop_zset(pending_key, n, out)
  if #out >= n then return end
  local p = redis.call('ZPOPMIN', pending_key, n - #out)
  for i = 1, #p, 2 do out[#out + 1] = p[i] end
end

-- Pops up to n pending task seqs in the order of the queue's policy.
local function pop_pending(base, pol, pending_key, n)
  local out = {}
  if pol.policy == 'wsjf' then
    pop_zset(pending_key, n, out)
    pop_lists(base, n, out)
  else
    pop_lists(base, n, out)
    pop_zset(pending_key, n, out)
  end
  return out
end

-- True when any task is pending.
local function any_pending(base, pending_key)
  return redis.call('ZCARD', pending_key) > 0 or redis.call('ZCARD', base .. 'levels') > 0
end

-- Removes one pending task (cancel): from the zset, or from its level's list.
local function remove_pending(base, pending_key, seq, prio)
  if redis.call('ZREM', pending_key, seq) == 1 then return end
  for _, level in ipairs({prio, 0}) do
    local list = base .. 'p:' .. level
    if redis.call('LREM', list, 1, seq) == 1 then
      if redis.call('LLEN', list) == 0 then redis.call('ZREM', base .. 'levels', level) end
      return
    end
  end
end

-- Wakes one idle worker of the queue, keeping the token list short: a token only says "look".
local function signal(signal_key)
  if redis.call('LLEN', signal_key) < 16 then
    redis.call('RPUSH', signal_key, '1')
  end
end

-- Tells `result --wait` clients that a task finished (one token per registered waiter).
local function notify_waiters(base, seq, task_key)
  local n = tonumber(redis.call('HGET', task_key, 'waiters') or '0')
  if n > 0 then
    local done = base .. 'done:' .. seq
    for _ = 1, n do redis.call('RPUSH', done, '1') end
    redis.call('PEXPIRE', done, 60000)
    redis.call('HDEL', task_key, 'waiters')
  end
end

-- Decrements the reference count of `module` in the queue's modrefs hash (task finished).
local function unref_module(modrefs_key, module)
  if module and hincr(modrefs_key, module, -1) <= 0 then
    redis.call('HDEL', modrefs_key, module)
  end
end

-- Releases the unique key a finished task held, if it still points at this task.
local function release_unique(base, seq, task_key)
  local u = redis.call('HGET', task_key, 'unique_key')
  if u then
    local k = base .. 'unique:' .. u
    if redis.call('GET', k) == tostring(seq) then redis.call('DEL', k) end
  end
end

-- Appends one attempt's error (a JSON object) to the task's `errors` JSON array.
local function append_error(task_key, err_json)
  local old = redis.call('HGET', task_key, 'errors')
  if not old or old == '' or old == '[]' then
    redis.call('HSET', task_key, 'errors', '[' .. err_json .. ']')
  else
    redis.call('HSET', task_key, 'errors', string.sub(old, 1, -2) .. ',' .. err_json .. ']')
  end
end

-- Moves a task into a finished state: index it by finish time, expire its hash after the
-- retention, drop its module reference and unique key, and wake waiters.
local function finish(base, seq, task_key, state, finished_set, stats_key, modrefs_key, now, retention_ms)
  redis.call('HSET', task_key, 'state', state, 'finished', now)
  redis.call('ZADD', finished_set, now, seq)
  if retention_ms > 0 then redis.call('PEXPIRE', task_key, retention_ms) end
  unref_module(modrefs_key, redis.call('HGET', task_key, 'module'))
  release_unique(base, seq, task_key)
  hincr(stats_key, state, 1)
  notify_waiters(base, seq, task_key)
end

-- Adds one task to a queue; shared by enqueue.lua and schedule_fire.lua.
--   k        the queue's keys: {seq, pending, delayed, meta, stats, modrefs, signal, estimates}
--   due      Unix ms when the task becomes ready (<= now: at once)
--   unique   unique key or '' (unique_ms: how long it may be held; 0 = until the task ends)
--   extra    further task fields as a flat name, value list
-- Returns seq, is_new (0 when an unfinished task holds the unique key: its seq is returned).
local function add_task(k, base, now, due, module, prio, unique, unique_ms, extra)
  if unique ~= '' then
    local held = redis.call('GET', base .. 'unique:' .. unique)
    if held then
      local st = redis.call('HGET', base .. 'task:' .. held, 'state')
      if st == 'pending' or st == 'delayed' or st == 'active' then
        return tonumber(held), 0
      end
    end
  end
  local seq = redis.call('INCR', k[1])
  local task_key = base .. 'task:' .. seq
  local fields = {'module', module, 'created', now}
  -- Defaults are not stored: a pending task stays small.
  if prio ~= 0 then
    fields[#fields + 1] = 'priority'
    fields[#fields + 1] = prio
  end
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  if unique ~= '' then
    fields[#fields + 1] = 'unique_key'
    fields[#fields + 1] = unique
    local uk = base .. 'unique:' .. unique
    if unique_ms > 0 then
      redis.call('SET', uk, seq, 'PX', unique_ms)
    else
      redis.call('SET', uk, seq)
    end
  end
  fields[#fields + 1] = 'state'
  if due > now then
    fields[#fields + 1] = 'delayed'
    redis.call('HSET', task_key, unpack(fields))
    redis.call('ZADD', k[3], due, seq)
  else
    fields[#fields + 1] = 'pending'
    redis.call('HSET', task_key, unpack(fields))
    push_pending(base, queue_policy(k[4]), k[2], k[8], task_key, seq, prio, false)
  end
  -- Delayed tasks signal too: an idle worker then learns the new earliest due time.
  signal(k[7])
  hincr(k[6], module, 1)
  hincr(k[5], 'enqueued', 1)
  return seq, 1
end
