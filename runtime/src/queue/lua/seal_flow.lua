-- seal_flow: opens a flow whose members are all enqueued: `building` becomes `running`, unless a
-- member's end already decided its state (a dead child made it `failed`, say), and its root (last
-- reducer) is recorded. A flow without reducers whose children all finished while it was being
-- built is decided here.
--
-- KEYS[1] flow       P:{Q}:flow:<n>   (hash)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] root       seq of the last reducer, 0 for none
-- Returns the flow's state after sealing.
local fkey = KEYS[1]
local n = string.match(fkey, ':flow:(%d+)$')
redis.call('HSET', fkey, 'root', ARGV[3])
local f = redis.call('HMGET', fkey, 'state', 'children', 'policy', 'succeeded', 'dead')
-- A dead child made it `failed` while it was being built: it ends now that its size is known.
if f[1] == 'failed' then flow_ended(fkey, n, 'failed') end
if f[1] ~= 'building' then return f[1] end
-- Workers may have finished the whole flow, root included, before it was sealed (the root was
-- not known to it then): its end decides now.
local root = tonumber(ARGV[3]) or 0
if root > 0 then
  local ended = ({succeeded = 'succeeded', cancelled = 'cancelled', expired = 'cancelled', dead = 'failed'})[redis.call('HGET', task_key(root), 'state')]
  if ended then
    flow_ended(fkey, n, ended)
    return ended
  end
end
local done = (tonumber(f[4]) or 0) + ((f[3] == 'ignore') and (tonumber(f[5]) or 0) or 0)
if root == 0 and done >= (tonumber(f[2]) or 0) then
  flow_ended(fkey, n, 'succeeded')
  return 'succeeded'
end
redis.call('HSET', fkey, 'state', 'running')
return 'running'
