-- reap: returns tasks whose lease expired (their worker died or hung) to the queue. Any number of
-- workers may run it at once: each expired task is handled by exactly one call.
--
-- KEYS[1] active     P:{Q}:active     (zset: lease deadline ms)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] dead       P:{Q}:dead       (zset)
-- KEYS[4] cancelled  P:{Q}:cancelled  (zset)
-- KEYS[5] stats      P:{Q}:stats      (hash)
-- KEYS[6] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[7] meta       P:{Q}:meta       (hash)
-- KEYS[8] estimates  P:{Q}:estimates  (hash)
-- KEYS[9] signal     P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] retention  ms finished tasks are kept (0 = forever)
-- ARGV[4] limit      most tasks handled per call
-- ARGV[5] max_attempts_default  for tasks that did not set max_attempts
-- ARGV[6] max_stalls  leases that may expire before a task was seen running, before it is dead
-- Returns {requeued_seqs, dead_seqs}.
-- An expired lease of a task that was seen running under it (`running` = the lease token, set by
-- heartbeat.lua) counts as a failed attempt (kind lease_expired): a task that kills every worker
-- that runs it ends in the dead set instead of looping forever. A task whose worker died before it
-- was seen running (prefetched, or its claim reply lost) is a *stall*: not an attempt, but counted
-- in `stalls`, and dead after max_stalls of them (a task that kills its worker within the first
-- heartbeat interval is bounded too). Either way it goes back to its old place in the pending set
-- at once (no backoff): the worker, not the task, failed.
local base, now, retention, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local default_max, max_stalls = tonumber(ARGV[5]), tonumber(ARGV[6]) or 5
local requeued, dead = {}, {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local pol = nil
for _, seq in ipairs(expired) do
  redis.call('ZREM', KEYS[1], seq)
  local task_key = base .. 'task:' .. seq
  -- pcall: a task key overwritten with another type is dropped from `active`, not fatal.
  local f = redis.pcall('HMGET', task_key, 'state', 'attempts', 'max_attempts', 'worker', 'cancel', 'lease', 'running', 'stalls')
  if type(f) == 'table' and not f.err and f[1] == 'active' then
    local attempts = tonumber(f[2]) or 1
    local max = tonumber(f[3]) or default_max
    local worker = cjson.encode(f[4] or '?'):sub(2, -2)
    local ran = f[7] ~= false and f[7] == f[6]
    local stalls = tonumber(f[8]) or 0
    if ran then
      local err = '{"attempt":' .. attempts .. ',"kind":"lease_expired","message":"the lease expired: worker '
        .. worker .. ' stopped reporting","at":' .. now .. '}'
      append_error(task_key, err)
      redis.call('HSET', task_key, 'error_kind', 'lease_expired', 'error', 'the lease expired before the task finished')
    else
      -- Not an attempt: the claim is undone, and the stall counted.
      stalls = stalls + 1
      attempts = attempts - 1
      redis.call('HSET', task_key, 'attempts', attempts, 'stalls', stalls)
      if stalls >= max_stalls then
        local msg = 'the lease expired ' .. stalls .. ' times before the task was seen running (last worker: ' .. worker .. ')'
        append_error(task_key, '{"attempt":' .. attempts .. ',"kind":"lease_expired","message":"' .. msg .. '","at":' .. now .. '}')
        redis.call('HSET', task_key, 'error_kind', 'lease_expired', 'error', msg)
      end
    end
    if f[5] == '1' then
      finish(base, seq, task_key, 'cancelled', KEYS[4], KEYS[5], KEYS[6], now, retention)
    elseif (ran and attempts >= max) or stalls >= max_stalls then
      finish(base, seq, task_key, 'dead', KEYS[3], KEYS[5], KEYS[6], now, retention)
      dead[#dead + 1] = tonumber(seq)
    else
      redis.call('HSET', task_key, 'state', 'pending')
      pol = pol or queue_policy(KEYS[7])
      local prio = tonumber(redis.call('HGET', task_key, 'priority')) or 0
      push_pending(base, pol, KEYS[2], KEYS[8], task_key, seq, prio, true)
      hincr(KEYS[5], 'requeued', 1)
      requeued[#requeued + 1] = tonumber(seq)
    end
  end
end
if #requeued > 0 then signal(KEYS[9]) end
return {requeued, dead}
