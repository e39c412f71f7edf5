-- enqueue: adds one task to a queue (bulk enqueue pipelines many calls of this script).
--
-- KEYS[1] seq        P:{Q}:seq        (string counter)
-- KEYS[2] pending    P:{Q}:pending    (zset)
-- KEYS[3] delayed    P:{Q}:delayed    (zset)
-- KEYS[4] meta       P:{Q}:meta       (hash: policy settings)
-- KEYS[5] stats      P:{Q}:stats      (hash: counters)
-- KEYS[6] modrefs    P:{Q}:modrefs    (hash: module -> unfinished tasks)
-- KEYS[7] signal     P:{Q}:signal     (list: worker wake-ups)
-- KEYS[8] estimates  P:{Q}:estimates  (hash: module -> mean run time µs)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] due        Unix ms when the task becomes ready; 0 or <= now means at once
-- ARGV[4] module     sha256 of the module (hex)
-- ARGV[5] priority   integer in [-1e6, 1e6]
-- ARGV[6] unique     unique key, or '' for none
-- ARGV[7] unique_ms  how long the unique key may be held at most (ms); 0 = until the task ends
-- ARGV[8..]          further task fields as name, value pairs (input, max_attempts, timeout_ms, ...)
-- Returns {seq, is_new}: is_new is 0 when a task holding the unique key exists (its seq returned).
local base, now, due = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local module, prio, unique, unique_ms = ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])

if unique ~= '' then
  local held = redis.call('GET', base .. 'unique:' .. unique)
  if held then
    local st = redis.call('HGET', base .. 'task:' .. held, 'state')
    if st == 'pending' or st == 'delayed' or st == 'active' then
      return {tonumber(held), 0}
    end
  end
end

local seq = redis.call('INCR', KEYS[1])
local task_key = base .. 'task:' .. seq
local fields = {'module', module, 'priority', prio, 'created', now}
for i = 8, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
if unique ~= '' then
  fields[#fields + 1] = 'unique_key'
  fields[#fields + 1] = unique
  local k = base .. 'unique:' .. unique
  if unique_ms > 0 then
    redis.call('SET', k, seq, 'PX', unique_ms)
  else
    redis.call('SET', k, seq)
  end
end

if due > now then
  fields[#fields + 1] = 'state'
  fields[#fields + 1] = 'delayed'
  redis.call('HSET', task_key, unpack(fields))
  redis.call('ZADD', KEYS[3], due, seq)
else
  fields[#fields + 1] = 'state'
  fields[#fields + 1] = 'pending'
  redis.call('HSET', task_key, unpack(fields))
  local pol = queue_policy(KEYS[4])
  local score
  if pol.policy == 'priority' then
    score = priority_score(prio, seq)
  else
    score = pending_score(pol, KEYS[8], task_key, seq)
  end
  redis.call('ZADD', KEYS[2], score, seq)
end
-- Delayed tasks signal too: an idle worker then learns the new earliest due time.
signal(KEYS[7])
hincr(KEYS[6], module, 1)
hincr(KEYS[5], 'enqueued', 1)
return {seq, 1}
