-- enqueue_bulk: adds many tasks that share their options (bulk enqueue), in one call: the
-- queue's counter, policy, counters and wake-up are touched once per call, not once per task.
--
-- KEYS[1..8]  as enqueue.lua: seq, pending, delayed, meta, stats, modrefs, signal, estimates
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] due        Unix ms when the tasks become ready; 0 or <= now means at once
-- ARGV[4] module     sha256 of the module (hex)
-- ARGV[5] priority   integer in [-1e6, 1e6]
-- ARGV[6] nshared    number of shared field pairs that follow
-- ARGV[7..]          the shared fields (name, value pairs), then one input per task ('' = empty)
-- Returns the seq of the first task; the tasks have consecutive seqs in input order.
local base, now, due, module, prio = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local nshared = tonumber(ARGV[6])
local first_input = 7 + 2 * nshared
local n = #ARGV - first_input + 1
if n <= 0 then return redis.error_reply('ERR enqueue_bulk needs at least one input') end
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1

local common = {'module', module, 'created', ARGV[2]}
if prio ~= 0 then
  common[#common + 1] = 'priority'
  common[#common + 1] = ARGV[5]
end
for i = 7, first_input - 1 do common[#common + 1] = ARGV[i] end
local delayed = due > now
common[#common + 1] = 'state'
common[#common + 1] = delayed and 'delayed' or 'pending'

local pol = queue_policy(KEYS[4])
local seqs = {}
for i = 0, n - 1 do
  local seq = first + i
  local fields = {unpack(common)}
  local input = ARGV[first_input + i]
  if input ~= '' then
    fields[#fields + 1] = 'input'
    fields[#fields + 1] = input
  end
  local task_key = base .. 'task:' .. seq
  redis.call('HSET', task_key, unpack(fields))
  if delayed then
    redis.call('ZADD', KEYS[3], due, seq)
  elseif pol.policy == 'wsjf' then
    push_pending(base, pol, KEYS[2], KEYS[8], task_key, seq, prio, false)
  else
    seqs[#seqs + 1] = seq
  end
end
if #seqs > 0 then
  local level = pending_level(pol, prio)
  local list = base .. 'p:' .. level
  -- RPUSH in slices: unpack has a limit on the number of values.
  for s = 1, #seqs, 1000 do
    redis.call('RPUSH', list, unpack(seqs, s, math.min(s + 999, #seqs)))
  end
  redis.call('ZADD', base .. 'levels', -level, level)
end
signal(KEYS[7])
hincr(KEYS[6], module, n)
hincr(KEYS[5], 'enqueued', n)
return first
