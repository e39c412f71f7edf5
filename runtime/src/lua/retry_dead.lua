-- retry_dead: puts dead tasks back in the queue with a fresh set of attempts.
--
-- KEYS[1] dead       P:{Q}:dead       (zset)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[4] meta       P:{Q}:meta       (hash)
-- KEYS[5] estimates  P:{Q}:estimates  (hash)
-- KEYS[6] signal     P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] limit      most tasks per call when retrying all (ARGV[3] empty)
-- ARGV[3..]          seqs to retry; none means the oldest `limit` dead tasks
-- Returns the seqs that were requeued (a seq that is not dead is skipped).
local base, limit = ARGV[1], tonumber(ARGV[2])
local seqs = {}
if #ARGV >= 3 then
  for i = 3, #ARGV do seqs[#seqs + 1] = ARGV[i] end
else
  seqs = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
end
local pol = queue_policy(KEYS[4])
local done = {}
for _, seq in ipairs(seqs) do
  local task_key = base .. 'task:' .. seq
  if redis.call('HGET', task_key, 'state') == 'dead' and redis.call('ZREM', KEYS[1], seq) == 1 then
    redis.call('PERSIST', task_key)
    redis.call('HSET', task_key, 'state', 'pending', 'attempts', 0)
    -- The last attempt's result goes; `errors` keeps the history of every attempt.
    redis.call('HDEL', task_key, 'finished', 'worker', 'started', 'claimed', 'running', 'stalls', 'cancel', 'output', 'log',
      'log_truncated', 'exit_code', 'error', 'error_kind', 'duration_us', 'finished_us', 'fuel_used')
    hincr(KEYS[3], redis.call('HGET', task_key, 'module'), 1)
    local prio = tonumber(redis.call('HGET', task_key, 'priority')) or 0
    push_pending(base, pol, KEYS[2], KEYS[5], task_key, seq, prio, false)
    done[#done + 1] = tonumber(seq)
  end
end
if #done > 0 then signal(KEYS[6]) end
return done
