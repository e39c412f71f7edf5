-- retry_dead: puts dead tasks back in the queue with a fresh set of attempts.
--
-- KEYS[1] dead       P:{Q}:dead       (zset)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[4] meta       P:{Q}:meta       (hash)
-- KEYS[5] estimates  P:{Q}:estimates  (hash)
-- KEYS[6] signal     P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] limit      most tasks per call when retrying all (no seqs given)
-- ARGV[4] skip       when retrying all: entries to pass over at the front of the dead set (tasks
--                    an earlier call could not retry)
-- ARGV[5..]          seqs to retry; none means the oldest `limit` dead tasks after `skip`
-- Returns {retried, blocked, gone, scanned}: retried seqs; seqs left dead because another
-- unfinished task holds their unique key; seqs that were not dead tasks (an index entry whose task
-- is gone is removed); the number of dead-set entries looked at.
-- A retried task takes its unique key back, so that a later enqueue with the key finds it.
local K = {dead = KEYS[1], pending = KEYS[2], modrefs = KEYS[3], meta = KEYS[4], estimates = KEYS[5], signal = KEYS[6]}
local limit, skip = tonumber(ARGV[3]), tonumber(ARGV[4]) or 0
local seqs = {}
if #ARGV >= 5 then
  for i = 5, #ARGV do seqs[#seqs + 1] = ARGV[i] end
else
  seqs = redis.call('ZRANGE', K.dead, skip, skip + limit - 1)
end
local pol = queue_policy(K.meta)
local retried, blocked, gone = {}, {}, {}
for _, seq in ipairs(seqs) do
  local tkey = task_key(seq)
  local f = redis.pcall('HMGET', tkey, 'state', 'unique_key', 'module', 'flow')
  if type(f) ~= 'table' or f.err or f[1] ~= 'dead' then
    -- Not a dead task (any more): its entry, if any, goes.
    redis.call('ZREM', K.dead, seq)
    gone[#gone + 1] = tonumber(seq)
  else
    local ok = true
    if f[2] then
      local uk = BASE .. 'unique:' .. f[2]
      local held = redis.call('GET', uk)
      if held and held ~= seq then
        local st = redis.call('HGET', task_key(held), 'state')
        ok = not (st == 'pending' or st == 'delayed' or st == 'active' or st == 'blocked')
      end
      if ok then redis.call('SET', uk, seq) end
    end
    if not ok then
      blocked[#blocked + 1] = tonumber(seq)
    else
      redis.call('ZREM', K.dead, seq)
      redis.call('ZREM', BASE .. 'kept', seq)
      redis.call('PERSIST', tkey)
      redis.call('HSET', tkey, 'attempts', 0)
      -- The last attempt's result goes; the `err:<n>` fields keep the history of every attempt.
      redis.call('HDEL', tkey, 'finished', 'stalls', 'cancel', 'output', 'log', 'log_truncated', 'exit_code', 'error',
        'error_kind', 'duration_us', 'finished_us', 'fuel_used')
      if f[3] then hincr(K.modrefs, f[3], 1) end
      back_to_pending(pol, seq, false)
      retried[#retried + 1] = tonumber(seq)
      if f[4] then
        -- A flow that failed for this task runs again once it has no dead member left.
        local fkey = BASE .. 'flow:' .. f[4]
        if redis.call('EXISTS', fkey) == 1 and redis.call('HINCRBY', fkey, 'dead', -1) <= 0
          and redis.call('HGET', fkey, 'state') == 'failed' then
          flow_reopened(fkey, f[4])
        end
      end
    end
  end
end
if #retried > 0 then signal(K.signal) end
return {retried, blocked, gone, #seqs}
