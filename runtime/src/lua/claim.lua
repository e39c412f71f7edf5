-- claim: promotes due delayed tasks, then leases up to N ready tasks to one worker.
--
-- KEYS[1] pending    P:{Q}:pending    (zset; with P:{Q}:levels and P:{Q}:p:<level> lists, see lib.lua)
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
-- ARGV[6] max_input  largest input the worker takes, bytes (0: any); a larger input is not sent:
--                    its length (an integer) stands in its place, and the worker fails the task
-- Returns {next_due, then per task: seq, token, module, input (or its length), max_attempts, timeout_ms, memory,
-- fuel, deterministic, attempts} (flat, missing fields nil) where next_due is the earliest due
-- time of a delayed task (-1 if none, -2 if the queue is paused) and token is the lease token
-- (fencing: a completion must carry it).
local base, now, lease_ms, n, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local max_input = tonumber(ARGV[6]) or 0

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
      local prio = tonumber(redis.call('HGET', task_key, 'priority')) or 0
      push_pending(base, pol, KEYS[1], KEYS[6], task_key, seq, prio, false)
    end
  end
end

local out = {-1}
local popped = pop_pending(base, queue_policy(KEYS[4]), KEYS[1], n)
local deadline = now + lease_ms
-- Passed to Redis as a string: a Lua number would be formatted with %.17g on every call.
local deadline_s = string.format('%d', deadline)
local leased = {}
for _, seq in ipairs(popped) do
  local task_key = base .. 'task:' .. seq
  -- pcall: a key overwritten with another type counts as gone instead of failing the script
  -- after the pop (which would lose the tasks popped with it).
  local f = redis.pcall('HMGET', task_key, 'module', 'input', 'max_attempts', 'timeout_ms', 'memory', 'fuel', 'deterministic',
    'attempts', 'lease', 'state')
  -- A hash with a state exists; one without a module is still claimed, so that the worker fails
  -- it with a clear error instead of it vanishing.
  if type(f) == 'table' and not f.err and (f[1] or f[10]) then
    local attempts = (tonumber(f[8]) or 0) + 1
    local token = (tonumber(f[9]) or 0) + 1
    local a, t = tostring(attempts), tostring(token)
    -- `claimed`, not `started`: a prefetched task may wait in the worker before it runs; the
    -- worker reports when it started (heartbeat.lua, complete.lua).
    redis.call('HSET', task_key, 'attempts', a, 'lease', t, 'state', 'active', 'worker', worker, 'claimed', ARGV[2])
    leased[#leased + 1] = deadline_s
    leased[#leased + 1] = seq
    out[#out + 1] = tonumber(seq)
    out[#out + 1] = token
    -- An oversized input (written around `enqueue`'s check) never travels to the worker.
    if max_input > 0 and f[2] and #f[2] > max_input then f[2] = #f[2] end
    for j = 1, 7 do out[#out + 1] = f[j] end
    out[#out + 1] = a
  end
end
if #leased > 0 then
  redis.call('ZADD', KEYS[3], unpack(leased))
end

-- More work left: pass the baton to another idle worker.
if any_pending(base, KEYS[1]) then
  signal(KEYS[5])
end

local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then out[1] = tonumber(first[2]) end
return out
