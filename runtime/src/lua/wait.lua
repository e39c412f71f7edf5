-- wait: registers a `result --wait` client, unless the task already finished.
--
-- KEYS[1] task       P:{Q}:task:<seq> (hash)
-- ARGV: none
-- Returns -1 if there is no such task, 1 if it finished, 0 if the caller was registered (it then
-- blocks on P:{Q}:done:<seq>, which finish() in lib.lua pushes to, and re-checks the state).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'succeeded' or state == 'dead' or state == 'cancelled' then return 1 end
hincr(KEYS[1], 'waiters', 1)
return 0
