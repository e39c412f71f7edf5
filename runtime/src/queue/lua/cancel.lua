-- cancel: cancels one task. A pending, delayed or blocked task is taken out of the queue and
-- finished as cancelled at once (O(1) or O(log n): a task in a priority list leaves a tombstone,
-- see lib.lua), and so are its blocked dependents; an active one is flagged, and its worker stops it and finishes it (heartbeat.lua
-- reports the flag).
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
-- ARGV[4] seq        the task
-- ARGV[5] reason     requested | flow_cancelled | drained: the task's `cancel_reason`
-- Returns {state before, what happened}: what is 'cancelled', 'cancelling', 'finished' or
-- 'unknown' (state '').
local K = {pending = KEYS[1], delayed = KEYS[2], cancelled = KEYS[3], stats = KEYS[4], modrefs = KEYS[5], meta = KEYS[6],
  signal = KEYS[7]}
local seq, reason = ARGV[4], ARGV[5]
local tkey = task_key(seq)
local f = redis.call('HMGET', tkey, 'state', 'group')
local state = f[1]
if not state then return {'', 'unknown'} end
if state == 'pending' or state == 'delayed' or state == 'blocked' then
  if state == 'pending' then
    remove_pending(seq, f[2])
  elseif state == 'delayed' then
    redis.call('ZREM', K.delayed, seq)
  else
    redis.call('ZREM', BASE .. 'blocked', seq)
  end
  local b = new_batch(K, ARGV[3])
  finish(b, seq, tkey, 'cancelled', {'cancel_reason', reason}, nil)
  flush(b)
  return {state, 'cancelled'}
elseif state == 'active' then
  redis.call('HSET', tkey, 'cancel', reason)
  return {state, 'cancelling'}
end
return {state, 'finished'}
