-- drain: removes up to `limit` waiting tasks of a queue (`wasmq queue drain`), finishing each as
-- cancelled with `cancel_reason` `drained` (their blocked dependents are cancelled with them, as
-- by a cancel). Bounded per call so that Redis never blocks on a large queue: the caller calls
-- again while it reports more. Pending tasks go in the queue's policy order; delayed ones by due
-- time; blocked ones by when they were enqueued. Running tasks are left alone.
--
-- KEYS[1] pending    P:{Q}:pending    (zset)
-- KEYS[2] delayed    P:{Q}:delayed    (zset)
-- KEYS[3] cancelled  P:{Q}:cancelled  (zset)
-- KEYS[4] stats      P:{Q}:stats      (hash)
-- KEYS[5] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[6] meta       P:{Q}:meta       (hash)
-- KEYS[7] signal     P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] retention  the caller's default retention (see lib.lua `retention`)
-- ARGV[4] states     which waiting tasks: any of pending, delayed, blocked, comma-separated
-- ARGV[5] limit      most tasks finished by this call
-- Returns {drained, more}: how many tasks this call finished, and 1 when it stopped at the limit.
local K = {pending = KEYS[1], delayed = KEYS[2], cancelled = KEYS[3], stats = KEYS[4], modrefs = KEYS[5], meta = KEYS[6],
  signal = KEYS[7]}
local limit = tonumber(ARGV[5]) or 1000
local want = {}
for s in string.gmatch(ARGV[4], '[^,]+') do want[s] = true end
local b = new_batch(K, ARGV[3])
local drained, popped = 0, 0

local function drain_one(seq, expected)
  local tkey = task_key(seq)
  -- A dependent cancelled earlier in this call (or a tombstone) is no longer in that state.
  if redis.call('HGET', tkey, 'state') ~= expected then return false end
  finish(b, seq, tkey, 'cancelled', {'cancel_reason', 'drained'}, nil)
  drained = drained + 1
  return true
end

if want.pending then
  local pol = queue_policy(K.meta)
  local tombstones = 0
  while popped < limit do
    local got = pop_pending(pol, K.pending, math.min(limit - popped, 500))
    if #got == 0 then break end
    for _, e in ipairs(got) do
      popped = popped + 1
      if not drain_one(e.seq, 'pending') and e.level then tombstones = tombstones + 1 end
    end
  end
  if tombstones > 0 and hincr(K.stats, 'tombstones', -tombstones) < 0 then redis.call('HSET', K.stats, 'tombstones', 0) end
end
for _, s in ipairs({'delayed', 'blocked'}) do
  if want[s] then
    local key = BASE .. s
    while popped < limit do
      local seqs = redis.call('ZRANGE', key, 0, math.min(limit - popped, 500) - 1)
      if #seqs == 0 then break end
      redis.call('ZREM', key, unpack(seqs))
      for _, seq in ipairs(seqs) do
        popped = popped + 1
        drain_one(seq, s)
      end
    end
  end
end
flush(b)
return {drained, popped >= limit and 1 or 0}
