-- reap: returns tasks whose lease expired (their worker died or hung) to the queue, finishes
-- waiting tasks whose expiry (`enqueue --expires`) passed as `expired` (swept by due time from
-- P:{Q}:expiring: this runs on a paused queue too), and deletes finished tasks and ended flows
-- past the queue's retention (bounded per call: a queue nobody finishes tasks in still ages out).
-- Any number of workers may run it at once: each expired lease or task is handled by exactly one
-- call.
--
-- KEYS[1] active     P:{Q}:active     (zset: lease deadline ms)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] succeeded  P:{Q}:succeeded  (zset)
-- KEYS[4] dead       P:{Q}:dead       (zset)
-- KEYS[5] cancelled  P:{Q}:cancelled  (zset)
-- KEYS[6] stats      P:{Q}:stats      (hash)
-- KEYS[7] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[8] meta       P:{Q}:meta       (hash)
-- KEYS[9] estimates  P:{Q}:estimates  (hash)
-- KEYS[10] signal    P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] retention  the caller's default retention (see lib.lua `retention`)
-- ARGV[4] limit      most expired leases, most expired tasks, and most finished tasks per state,
--                    handled per call
-- ARGV[5] max_attempts_default  for tasks that did not set max_attempts
-- ARGV[6] max_stalls  leases that may expire before a task was seen running, before it is dead
-- Returns {requeued_seqs, dead_seqs, trimmed, expired}: the last is how many tasks expired.
-- An expired lease of a task that was seen running under it (`running` = the lease token, set by
-- heartbeat.lua) counts as a failed attempt (kind lease_expired): a task that kills every worker
-- that runs it ends in the dead set instead of looping forever. A task whose worker died before it
-- was seen running (prefetched, or its claim reply lost) is a *stall*: not an attempt, but counted
-- in `stalls`, and dead after max_stalls of them (a task that kills its worker within the first
-- heartbeat interval is bounded too). Either way it goes back to its old place in the pending set
-- at once (no backoff): the worker, not the task, failed.
local K = {active = KEYS[1], pending = KEYS[2], succeeded = KEYS[3], dead = KEYS[4], cancelled = KEYS[5],
  stats = KEYS[6], modrefs = KEYS[7], meta = KEYS[8], estimates = KEYS[9], signal = KEYS[10]}
local limit, default_max, max_stalls = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local b = new_batch(K, ARGV[3])
local requeued, dead = {}, {}
local expired = redis.call('ZRANGEBYSCORE', K.active, '-inf', NOW, 'LIMIT', 0, limit)
if #expired > 0 then redis.call('ZREM', K.active, unpack(expired)) end
local pol = nil
for _, seq in ipairs(expired) do
  local tkey = task_key(seq)
  -- pcall: a task key overwritten with another type is dropped from `active`, not fatal.
  local f = redis.pcall('HMGET', tkey, 'state', 'attempts', 'max_attempts', 'worker', 'cancel', 'lease', 'running', 'stalls', 'flow', 'progress', 'group')
  if type(f) == 'table' and not f.err and f[1] == 'active' then
    if f[9] then hincr(BASE .. 'flow:' .. f[9], 'active', -1) end
    if f[11] and group_released(f[11]) then b.wake = true end
    if f[10] then redis.call('HDEL', tkey, 'progress', 'progress_msg') end
    local attempts = tonumber(f[2]) or 1
    local max = tonumber(f[3]) or default_max
    local worker = f[4] or '?'
    local ran = f[7] ~= false and f[7] == f[6]
    local stalls = tonumber(f[8]) or 0
    if ran then
      append_error(tkey, attempts, 'lease_expired', 'the lease expired: worker ' .. worker .. ' stopped reporting', worker)
      redis.call('HSET', tkey, 'error_kind', 'lease_expired', 'error', 'the lease expired before the task finished')
    else
      -- Not an attempt: the claim is undone, and the stall counted.
      stalls = stalls + 1
      redis.call('HSET', tkey, 'attempts', attempts - 1, 'stalls', stalls)
      if stalls >= max_stalls then
        local msg = 'the lease expired ' .. stalls .. ' times before the task was seen running (last worker: ' .. worker .. ')'
        append_error(tkey, attempts, 'lease_expired', msg, worker)
        redis.call('HSET', tkey, 'error_kind', 'lease_expired', 'error', msg)
      end
    end
    if f[5] then
      finish(b, seq, tkey, 'cancelled', {'cancel_reason', cancel_reason(f[5])}, nil)
    elseif (ran and attempts >= max) or stalls >= max_stalls then
      finish(b, seq, tkey, 'dead', {}, nil)
      dead[#dead + 1] = tonumber(seq)
    else
      pol = pol or queue_policy(K.meta)
      back_to_pending(pol, seq, true)
      count(b, 'requeued', 1)
      requeued[#requeued + 1] = tonumber(seq)
      b.wake = true
    end
  end
end
-- Waiting tasks past their expiry. An entry whose task is no longer waiting (or gone, or whose
-- expiry moved) is only dropped from the zset.
local n_expired = 0
local due_exp = redis.call('ZRANGEBYSCORE', EXPIRING_KEY, '-inf', NOW, 'LIMIT', 0, limit)
if #due_exp > 0 then redis.call('ZREM', EXPIRING_KEY, unpack(due_exp)) end
for _, seq in ipairs(due_exp) do
  local tkey = task_key(seq)
  local f = redis.pcall('HMGET', tkey, 'state', 'expires', 'group')
  if type(f) == 'table' and not f.err and f[2] and (tonumber(f[2]) or 0) <= NOW then
    local st = f[1]
    if st == 'pending' then
      remove_pending(seq, f[3])
    elseif st == 'delayed' then
      redis.call('ZREM', BASE .. 'delayed', seq)
    elseif st == 'blocked' then
      redis.call('ZREM', BASE .. 'blocked', seq)
    end
    if st == 'pending' or st == 'delayed' or st == 'blocked' then
      finish(b, seq, tkey, 'expired', {}, nil)
      n_expired = n_expired + 1
    end
  end
end
flush(b)
-- Retention for queues where nothing finishes any more.
local limits = retention(K.meta, ARGV[3])
local trimmed = 0
for _, state in ipairs({'succeeded', 'dead', 'cancelled', 'expired'}) do
  trimmed = trimmed + trim_finished(K[state], limits[state], limit)
end
trimmed = trimmed + trim_flows(limits, limit)
return {requeued, dead, trimmed, n_expired}
