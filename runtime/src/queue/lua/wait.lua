-- wait: registers a `result --wait` client, unless the task already finished.
--
-- KEYS[1] task       P:{Q}:task:<seq> (hash)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (unused)
-- Returns -1 if there is no such task, 1 if it finished, 0 if the caller was registered: it then
-- blocks on P:{Q}:done:<seq>, which lib.lua's `notify_waiters` pushes one token to when the task
-- finishes; each waiter that pops the token pushes it back for the next. `waiters` is a flag, not
-- a count, so waiters that give up leave nothing behind.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if FINISHED[state] then return 1 end
redis.call('HSET', KEYS[1], 'waiters', '1')
return 0
