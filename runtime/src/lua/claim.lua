-- claim: promotes due delayed tasks, then leases up to N ready tasks to one worker.
--
-- KEYS[1] pending    P:{Q}:pending    (zset)
-- KEYS[2] delayed    P:{Q}:delayed    (zset: due ms)
-- KEYS[3] active     P:{Q}:active     (zset: lease deadline ms)
-- KEYS[4] meta       P:{Q}:meta       (hash: paused flag, policy)
-- KEYS[5] signal     P:{Q}:signal     (list)
-- KEYS[6] estimates  P:{Q}:estimates  (hash)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] lease_ms   lease length
-- ARGV[4] n          most tasks to claim
-- ARGV[5] worker     worker id (recorded in the task)
-- Returns {next_due, seq1, token1, fields1, seq2, token2, fields2, ...} where next_due is the
-- earliest due time of a delayed task (-1 if none, -2 if the queue is paused), token is the lease
-- token (fencing: a completion must carry it) and fields is the task hash as a flat array.
local base, now, lease_ms, n, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

if redis.call('HGET', KEYS[4], 'paused') == '1' then
  return {-2}
end

-- Promote due delayed tasks (bounded per call; the rest follow on the next claim).
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  local pol = queue_policy(KEYS[4])
  for _, seq in ipairs(due) do
    local task_key = base .. 'task:' .. seq
    redis.call('ZREM', KEYS[2], seq)
    -- A task whose hash is gone (purged) is dropped rather than resurrected as a stub.
    if is_hash(task_key) then
      redis.call('HSET', task_key, 'state', 'pending')
      redis.call('ZADD', KEYS[1], pending_score(pol, KEYS[6], task_key, tonumber(seq)), seq)
    end
  end
end

local out = {-1}
local popped = redis.call('ZPOPMIN', KEYS[1], n)
local deadline = now + lease_ms
for i = 1, #popped, 2 do
  local seq = popped[i]
  local task_key = base .. 'task:' .. seq
  if is_hash(task_key) then
    hincr(task_key, 'attempts', 1)
    local token = hincr(task_key, 'lease', 1)
    redis.call('HSET', task_key, 'state', 'active', 'worker', worker, 'started', now)
    redis.call('ZADD', KEYS[3], deadline, seq)
    out[#out + 1] = tonumber(seq)
    out[#out + 1] = token
    out[#out + 1] = redis.call('HGETALL', task_key)
  end
end

-- More work left: pass the baton to another idle worker.
if redis.call('ZCARD', KEYS[1]) > 0 then
  signal(KEYS[5])
end

local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then out[1] = tonumber(first[2]) end
return out
