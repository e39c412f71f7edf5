-- claim: promotes due delayed tasks, then leases up to N ready tasks to one worker, within the
-- queue's flow-control limits (`wasmq queue limit`, read with the policy: see lib.lua
-- `queue_policy`). A queue with a limit is claimed only for the worker's free run slots (no
-- prefetch), at most `concurrency - ZCARD(active)` tasks, and at most the room its rate window
-- leaves. A task past its expiry is never started: it is finished as expired here. In a queue
-- with groups (`enqueue --group`), tasks are taken round-robin across the groups with work, one
-- per group per turn, within each group's limits (see `claim_groups` below and lib.lua).
--
-- KEYS[1] pending    P:{Q}:pending    (zset; with P:{Q}:levels and P:{Q}:p:<level> lists, and the
--                    groups' keys P:{Q}:g:<group>:* and P:{Q}:groups:*, see lib.lua)
-- KEYS[2] delayed    P:{Q}:delayed    (zset: due ms)
-- KEYS[3] active     P:{Q}:active     (zset: lease deadline ms)
-- KEYS[4] meta       P:{Q}:meta       (hash: paused flag, policy)
-- KEYS[5] signal     P:{Q}:signal     (list)
-- KEYS[6] estimates  P:{Q}:estimates  (hash)
-- KEYS[7] stats      P:{Q}:stats      (hash: the tombstones counter, `last_claim` ms, the
--                    wait-time histogram `wait_*`: enqueue to first claim, `rate_window`)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] lease_ms   lease length
-- ARGV[4] n          most tasks to claim
-- ARGV[5] max_bytes  most input bytes in all (0: no limit); the first task is claimed whatever its size
-- ARGV[6] worker     worker id (recorded in the task)
-- ARGV[7] max_input  largest input the worker takes, bytes (0: any); a larger input is not sent:
--                    its length (an integer) stands in its place, and the worker fails the task
-- ARGV[8] run_slots  the worker's free run slots: a queue with a limit is claimed for no more
-- ARGV[9..]          the task fields to return for each task, `input` among them
-- Returns {next_due, rate_wait, then per task: seq, token, attempts, then the requested fields}
-- (flat, missing fields nil), where next_due is how many ms from now the earliest delayed task is
-- due (-1 if none, -2 if the queue is paused), rate_wait how many ms until the queue's rate limit
-- lets another task start when it let none now (-1 otherwise), and token is the lease token
-- (fencing: a completion must carry it).
local K = {pending = KEYS[1], delayed = KEYS[2], active = KEYS[3], meta = KEYS[4], signal = KEYS[5], estimates = KEYS[6],
  stats = KEYS[7]}
local lease_ms, n, max_bytes, worker = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]) or 0, ARGV[6]
local max_input = tonumber(ARGV[7]) or 0
local run_slots = tonumber(ARGV[8]) or 0
local names = {}
local input_at = nil
for i = 9, #ARGV do
  names[#names + 1] = ARGV[i]
  if ARGV[i] == 'input' then input_at = #names end
end

if redis.call('HGET', K.meta, 'paused') == '1' then
  return {-2, -1}
end

local pol = queue_policy(K.meta)
-- Promote due delayed tasks (bounded per call; the rest follow on the next claim).
local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', NOW, 'LIMIT', 0, 1000)
if #due > 0 then
  redis.call('ZREM', K.delayed, unpack(due))
  for _, seq in ipairs(due) do
    -- A task whose hash is gone (purged) is dropped rather than resurrected as a stub.
    if is_hash(task_key(seq)) then back_to_pending(pol, seq, false) end
  end
end

local out = {-1, -1}
-- Flow control: only for free run slots, within the concurrency and the rate limits.
local room = n
local rate_left = nil
if pol.limited then
  room = math.min(room, run_slots)
  if pol.concurrency > 0 then room = math.min(room, pol.concurrency - redis.call('ZCARD', K.active)) end
  if pol.rate > 0 and room > 0 then
    local r, wait = rate_room(pol, K.stats)
    if r <= 0 then out[2] = wait end
    room = math.min(room, r)
    rate_left = r
  end
  if room < 0 then room = 0 end
end
local expired_batch = nil
local deadline_s = string.format('%d', NOW + lease_ms)
local leased = {}
local bytes, claimed, tombstones = 0, 0, 0
local waits = {}

-- Leases one popped entry to the worker. Returns 'claimed', 'skip' (a tombstone, or a task
-- finished as expired) or 'full' (over the byte budget: the caller puts it back).
local function take(e)
  local seq = e.seq
  local tkey = task_key(seq)
  -- pcall: a key overwritten with another type counts as gone instead of failing the script
  -- after the pop (which would lose the tasks popped with it).
  local f = redis.pcall('HMGET', tkey, 'state', 'attempts', 'lease', 'flow', 'created', 'expires', unpack(names))
  local ok = type(f) == 'table' and not f.err
  -- A hash without a state (written by hand) is still claimed, so that the worker fails it with
  -- a clear error instead of it vanishing; a task in another state (cancelled while it waited in
  -- a list) or a missing one is a tombstone.
  if not ok or (f[1] ~= 'pending' and (f[1] or not is_hash(tkey))) then
    if e.level then tombstones = tombstones + 1 end
    return 'skip'
  end
  if f[6] and (tonumber(f[6]) or 0) <= NOW then
    -- Past its expiry (the sweep had not come yet): finished as expired, never started.
    -- (Its blocked dependents are cancelled: the batch needs every finished set.)
    expired_batch = expired_batch or new_batch({stats = K.stats, modrefs = BASE .. 'modrefs', meta = K.meta, signal = K.signal,
      succeeded = BASE .. 'succeeded', dead = BASE .. 'dead', cancelled = BASE .. 'cancelled'}, nil)
    finish(expired_batch, seq, tkey, 'expired', {}, nil)
    return 'skip'
  end
  local input = input_at and f[6 + input_at]
  local size = input and #input or 0
  if claimed > 0 and max_bytes > 0 and bytes + size > max_bytes then return 'full' end
  bytes = bytes + size
  claimed = claimed + 1
  local a = tostring((tonumber(f[2]) or 0) + 1)
  local token = (tonumber(f[3]) or 0) + 1
  -- `claimed`, not `started`: a prefetched task may wait in the worker before it runs; the
  -- worker reports when it started (heartbeat.lua, complete.lua).
  redis.call('HSET', tkey, 'attempts', a, 'lease', tostring(token), 'state', 'active', 'worker', worker, 'claimed', NOW_S)
  -- Wait time (enqueue to first claim) for `/metrics`.
  if a == '1' and f[5] then
    local wait_us = (NOW - (tonumber(f[5]) or NOW)) * 1000
    local bkt = 'wait_b' .. hist_bucket(wait_us)
    waits[bkt] = (waits[bkt] or 0) + 1
    waits.wait_sum_us = (waits.wait_sum_us or 0) + math.max(wait_us, 0)
    waits.wait_count = (waits.wait_count or 0) + 1
  end
  -- A flow member counts as running until complete.lua or reap.lua takes it off `active`.
  if f[4] then hincr(BASE .. 'flow:' .. f[4], 'active', 1) end
  leased[#leased + 1] = deadline_s
  leased[#leased + 1] = seq
  out[#out + 1] = tonumber(seq)
  out[#out + 1] = token
  out[#out + 1] = a
  -- An oversized input (written around `enqueue`'s check) never travels to the worker.
  if input and max_input > 0 and size > max_input then f[6 + input_at] = size end
  for j = 1, #names do out[#out + 1] = f[6 + j] end
  -- Claimed: no longer waiting, so out of the expiring zset.
  if f[6] then redis.call('ZREM', EXPIRING_KEY, seq) end
  return 'claimed'
end

-- Groups (see lib.lua): one task per visit of the rotation's head group, which goes to the tail
-- (LMOVE), so that claims go round-robin across the groups with work and a group that just got
-- work waits behind at most the others once. A group at its concurrency limit, with a full rate
-- window, or without work leaves the rotation (parked, rate-parked or idle) at that visit. Every
-- visit claims a task or takes a group or a tombstone out, so a claim of n tasks costs O(n)
-- visits plus those removals (capped per call), whatever the number of groups or pending tasks.
local function claim_groups()
  local back = redis.call('ZRANGEBYSCORE', GROUPS_RATE_PARKED, '-inf', NOW, 'LIMIT', 0, 1000)
  if #back > 0 then
    redis.call('ZREM', GROUPS_RATE_PARKED, unpack(back))
    for _, g in ipairs(back) do
      if redis.call('HGET', GROUPS_STATE, g) == 'rate' then
        redis.call('HSET', GROUPS_STATE, g, 'ready')
        redis.call('RPUSH', GROUPS_READY, g)
      end
    end
  end
  local tally = {grouped = 0}
  local visits, max_visits = 0, room + 1000
  while claimed < room and visits < max_visits do
    local g = redis.call('LMOVE', GROUPS_READY, GROUPS_READY, 'LEFT', 'RIGHT')
    if not g and visits == 0 and own_pending() then
      -- Tasks without a group and no turn in the rotation (cannot happen; a safety net that
      -- costs two reads of an empty rotation): they join it.
      join_rotation('')
      g = redis.call('LMOVE', GROUPS_READY, GROUPS_READY, 'LEFT', 'RIGHT')
    end
    if not g then break end
    visits = visits + 1
    -- Why the group leaves the rotation, if it does: its state then (false: idle).
    local leave = nil
    if g ~= '' and pol.group_concurrency > 0
      and (tonumber(redis.call('HGET', GROUPS_ACTIVE, g)) or 0) >= pol.group_concurrency then
      leave = 'parked'
    elseif g ~= '' and pol.group_rate > 0 then
      local r, wait = group_rate_room(g, pol.group_rate, pol.group_rate_ms)
      if r <= 0 then
        leave = 'rate'
        redis.call('ZADD', GROUPS_RATE_PARKED, NOW + wait, g)
      end
    end
    if not leave then
      local e = pop_pending(pol, 1, g, tally)[1]
      if not e then
        leave = false
      else
        local r = take(e)
        if r == 'full' then
          -- Back where it was (unpop counts it in again).
          unpop({e}, 1)
          break
        elseif r == 'claimed' and g ~= '' then
          hincr(GROUPS_ACTIVE, g, 1)
          if pol.group_rate > 0 then group_rate_record(g, pol.group_rate_ms) end
        end
      end
    end
    if leave ~= nil then
      -- Just moved to the tail: LREM from the tail finds it at once.
      redis.call('LREM', GROUPS_READY, -1, g)
      if leave then
        redis.call('HSET', GROUPS_STATE, g, leave)
      else
        redis.call('HDEL', GROUPS_STATE, g)
      end
    end
  end
  if tally.grouped > 0 then hincr(K.stats, 'grouped_pending', -tally.grouped) end
  -- Nothing claimed and every group with work waits for its rate window: sleep until the first
  -- frees (a released concurrency slot wakes a worker, see complete.lua).
  if claimed == 0 and out[2] < 0 and redis.call('LLEN', GROUPS_READY) == 0 then
    local first = redis.call('ZRANGE', GROUPS_RATE_PARKED, 0, 0, 'WITHSCORES')
    if first[2] then out[2] = math.max(tonumber(first[2]) - NOW, 1) end
  end
end

if room > 0 then
  if pol.grouped then
    claim_groups()
  else
    local popped = pop_pending(pol, room)
    for i, e in ipairs(popped) do
      if take(e) == 'full' then
        -- Over the byte budget: this task and the rest go back where they were.
        unpop(popped, i)
        break
      end
    end
  end
end
if expired_batch then flush(expired_batch) end
if #leased > 0 then
  redis.call('ZADD', K.active, unpack(leased))
  if pol.rate > 0 then rate_record(K.stats, claimed) end
  -- The time of the last claim, for `/metrics` and the dashboard (a queue whose workers stopped
  -- claiming shows here).
  redis.call('HSET', K.stats, 'last_claim', NOW_S)
  for name, by in pairs(waits) do hincr(K.stats, name, by) end
end
if tombstones > 0 and hincr(K.stats, 'tombstones', -tombstones) < 0 then
  redis.call('HSET', K.stats, 'tombstones', 0)
end

-- More work left: pass the baton to another idle worker, unless a limit binds now (the worker
-- that hit the rate limit sleeps until it frees; a finish in a queue with a concurrency limit
-- wakes a worker, see complete.lua), or this worker had no free run slot to offer (its token
-- would wake the worker itself, which would claim nothing again: a busy loop).
local bound = pol.limited and (run_slots <= 0 or out[2] >= 0 or (rate_left and rate_left - claimed <= 0)
  or (pol.concurrency > 0 and redis.call('ZCARD', K.active) >= pol.concurrency))
if not bound and any_pending() then
  signal(K.signal)
end

local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
if first[2] then out[1] = math.max(tonumber(first[2]) - NOW, 0) end
return out
