-- complete: records the outcome of a batch of task attempts, each only if the caller still holds
-- the task's lease (fencing: a stale worker's report is refused, so a result is written once).
--
-- KEYS[1] active     P:{Q}:active     (zset)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] delayed    P:{Q}:delayed    (zset)
-- KEYS[4] succeeded  P:{Q}:succeeded  (zset: finish ms)
-- KEYS[5] dead       P:{Q}:dead       (zset: finish ms)
-- KEYS[6] cancelled  P:{Q}:cancelled  (zset: finish ms)
-- KEYS[7] stats      P:{Q}:stats      (hash)
-- KEYS[8] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[9] estimates  P:{Q}:estimates  (hash: module -> mean run time µs)
-- KEYS[10] meta      P:{Q}:meta       (hash)
-- KEYS[11] signal    P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] retention  ms that finished tasks are kept (0 = forever)
-- ARGV[4..]          records, each: seq, token, action, due, error, nfields, name1, value1, ...
--   action  succeeded | retry | dead | cancelled | release
--   due     for retry: Unix ms when the task is due again (otherwise ignored)
--   error   for retry/dead/cancelled: this attempt's error as a JSON object, or ''
--   fields  result fields written to the task hash (output, log, exit_code, error, duration_us, ...)
-- Returns one integer per record: 1 applied, 0 refused (lease lost or task gone).
local base, now, retention = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local results = {}
local i = 4
local pol = nil
while i <= #ARGV do
  local seq, token, action, due, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
  local nfields = tonumber(ARGV[i + 5])
  local first_field = i + 6
  i = first_field + 2 * nfields

  local task_key = base .. 'task:' .. seq
  local cur = redis.call('HMGET', task_key, 'state', 'lease')
  if cur[1] ~= 'active' or cur[2] ~= token then
    results[#results + 1] = 0
  else
    results[#results + 1] = 1
    redis.call('ZREM', KEYS[1], seq)
    if nfields > 0 then
      redis.call('HSET', task_key, unpack(ARGV, first_field, first_field + 2 * nfields - 1))
    end
    if err ~= '' then append_error(task_key, err) end

    if action == 'succeeded' then
      -- Errors of earlier attempts stay in `errors`; the task's own error fields are cleared.
      redis.call('HDEL', task_key, 'error', 'error_kind')
      -- Learn the module's mean run time (exponentially weighted) for the wsjf policy.
      local f = redis.call('HMGET', task_key, 'module', 'duration_us')
      local d = tonumber(f[2])
      if f[1] and d then
        local old = tonumber(redis.call('HGET', KEYS[9], f[1]))
        local new = d
        if old then new = math.floor(old * 0.8 + d * 0.2) end
        redis.call('HSET', KEYS[9], f[1], new)
      end
      finish(base, seq, task_key, 'succeeded', KEYS[4], KEYS[7], KEYS[8], now, retention)
    elseif action == 'retry' then
      redis.call('HSET', task_key, 'state', 'delayed')
      redis.call('ZADD', KEYS[3], due, seq)
      hincr(KEYS[7], 'retried', 1)
      signal(KEYS[11])
    elseif action == 'dead' then
      finish(base, seq, task_key, 'dead', KEYS[5], KEYS[7], KEYS[8], now, retention)
    elseif action == 'cancelled' then
      finish(base, seq, task_key, 'cancelled', KEYS[6], KEYS[7], KEYS[8], now, retention)
    elseif action == 'release' then
      -- Handed back unfinished (worker shutdown): not an attempt, back at its old place.
      hincr(task_key, 'attempts', -1)
      redis.call('HSET', task_key, 'state', 'pending')
      redis.call('HDEL', task_key, 'worker', 'started')
      pol = pol or queue_policy(KEYS[10])
      redis.call('ZADD', KEYS[2], pending_score(pol, KEYS[9], task_key, tonumber(seq)), seq)
      signal(KEYS[11])
    else
      return redis.error_reply('ERR unknown completion action ' .. tostring(action))
    end
  end
end

-- Forget index entries whose task hashes have expired.
if retention > 0 then
  local cutoff = now - retention
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', cutoff)
end
return results
