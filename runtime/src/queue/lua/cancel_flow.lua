-- cancel_flow: marks a flow that is building or running `cancelled` (its members are cancelled
-- one by one by the caller, with reason flow_cancelled, through cancel.lua); from then on it is
-- under the queue's retention for cancelled tasks, as one unit (see lib.lua).
--
-- KEYS[1] flow       P:{Q}:flow:<n>   (hash)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- Returns the flow's state before the call (nil for no flow); only building and running change.
local fkey = KEYS[1]
local st = redis.call('HGET', fkey, 'state')
if st == 'building' or st == 'running' then
  flow_ended(fkey, string.match(fkey, ':flow:(%d+)$'), 'cancelled')
end
return st
