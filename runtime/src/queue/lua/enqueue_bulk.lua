-- enqueue_bulk: adds many tasks that share their options (bulk enqueue), in one call: the
-- queue's counter, policy, counters and wake-up are touched once per call, not once per task.
--
-- KEYS[1..8]  as enqueue.lua: seq, pending, delayed, meta, stats, modrefs, signal, estimates
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] due_at     Unix ms when the tasks become ready (0: at once)
-- ARGV[4] delay_ms   or this long from now, whichever is later (0: none)
-- ARGV[5] module     sha256 of the module (hex)
-- ARGV[6] priority   integer
-- ARGV[7] expires_at Unix ms after which a task still waiting expires (0: see expires_in)
-- ARGV[8] expires_in or this long from now (ms; 0 with expires_at 0: never)
-- ARGV[9] nshared    number of shared field pairs that follow
-- ARGV[10..]         the shared fields (name, value pairs), then one input per task ('' = empty)
-- Returns the seq of the first task; the tasks have consecutive seqs in input order.
local K = {seq = KEYS[1], pending = KEYS[2], delayed = KEYS[3], meta = KEYS[4], stats = KEYS[5], modrefs = KEYS[6],
  signal = KEYS[7], estimates = KEYS[8]}
local due, module, prio = due_time(ARGV[3], ARGV[4]), ARGV[5], tonumber(ARGV[6])
local expires = expiry_time(ARGV[7], ARGV[8])
local nshared = tonumber(ARGV[9])
local first_input = 10 + 2 * nshared
local n = #ARGV - first_input + 1
if n <= 0 then return redis.error_reply('ERR enqueue_bulk needs at least one input') end
local last = redis.call('INCRBY', K.seq, n)
local first = last - n + 1

-- Members of a flow (a shared field `flow`) join its list of children in the same script, as in
-- lib.lua's add_task. Tasks with a group (a shared field `group`) go to its pool one by one.
local group = nil
for i = 10, first_input - 1, 2 do
  if ARGV[i] == 'group' then group = ARGV[i + 1] end
  if ARGV[i] == 'flow' then
    local list = BASE .. 'flow:' .. ARGV[i + 1] .. ':children'
    for s = first, last, 1000 do
      local slice = {}
      for seq = s, math.min(s + 999, last) do slice[#slice + 1] = seq end
      redis.call('RPUSH', list, unpack(slice))
    end
  end
end

local common = {'module', module, 'created', NOW_S}
if prio ~= 0 then
  common[#common + 1] = 'priority'
  common[#common + 1] = ARGV[6]
end
for i = 10, first_input - 1 do common[#common + 1] = ARGV[i] end
if expires > 0 then
  common[#common + 1] = 'expires'
  common[#common + 1] = string.format('%d', expires)
end
local delayed = due > NOW
common[#common + 1] = 'state'
common[#common + 1] = delayed and 'delayed' or 'pending'
if delayed then
  common[#common + 1] = 'due'
  common[#common + 1] = string.format('%d', due)
end

local pol = queue_policy(K.meta)
local seqs = {}
for i = 0, n - 1 do
  local seq = first + i
  local fields = {unpack(common)}
  local input = ARGV[first_input + i]
  if input ~= '' then
    fields[#fields + 1] = 'input'
    fields[#fields + 1] = input
  end
  redis.call('HSET', task_key(seq), unpack(fields))
  if delayed then
    redis.call('ZADD', K.delayed, due, seq)
  elseif pol.policy == 'wsjf' or group then
    push_pending(pol, seq, prio, false, group)
  else
    seqs[#seqs + 1] = seq
  end
end
if #seqs > 0 then
  local level = pending_level(pol, prio)
  local list = BASE .. 'p:' .. level
  -- RPUSH in slices: unpack has a limit on the number of values.
  for s = 1, #seqs, 1000 do
    redis.call('RPUSH', list, unpack(seqs, s, math.min(s + 999, #seqs)))
  end
  redis.call('ZADD', BASE .. 'levels', -level, level)
end
if expires > 0 then
  -- Into the expiring zset (a time already past is expired by the next sweep or claim).
  for s = first, last, 500 do
    local pairs_ = {}
    for seq = s, math.min(s + 499, last) do
      pairs_[#pairs_ + 1] = expires
      pairs_[#pairs_ + 1] = seq
    end
    redis.call('ZADD', BASE .. 'expiring', unpack(pairs_))
  end
end
signal(K.signal)
hincr(K.modrefs, module, n)
hincr(K.stats, 'enqueued', n)
return first
