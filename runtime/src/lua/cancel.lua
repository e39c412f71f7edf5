-- cancel: cancels one task. A pending or delayed task is removed and marked cancelled at once; a
-- running one is flagged, and its worker stops it and marks it (heartbeat.lua reports the flag).
--
-- KEYS[1] pending    P:{Q}:pending    (zset)
-- KEYS[2] delayed    P:{Q}:delayed    (zset)
-- KEYS[3] cancelled  P:{Q}:cancelled  (zset)
-- KEYS[4] stats      P:{Q}:stats      (hash)
-- KEYS[5] modrefs    P:{Q}:modrefs    (hash)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] seq        the task
-- ARGV[4] retention  ms finished tasks are kept (0 = forever)
-- Returns the state the task was in ('' if there is no such task) and what happened:
-- {state, 'cancelled' | 'cancelling' | 'finished'}.
local base, now, seq, retention = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local task_key = base .. 'task:' .. seq
local state = redis.call('HGET', task_key, 'state')
if not state then return {'', 'unknown'} end
if state == 'pending' or state == 'delayed' then
  remove_pending(base, KEYS[1], seq, tonumber(redis.call('HGET', task_key, 'priority')) or 0)
  redis.call('ZREM', KEYS[2], seq)
  finish(base, seq, task_key, 'cancelled', KEYS[3], KEYS[4], KEYS[5], now, retention)
  return {state, 'cancelled'}
elseif state == 'active' then
  redis.call('HSET', task_key, 'cancel', '1')
  return {state, 'cancelling'}
end
return {state, 'finished'}
