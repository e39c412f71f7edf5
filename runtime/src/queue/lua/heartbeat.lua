-- heartbeat: extends the leases of the tasks a worker still holds, records which of them have
-- started running and the progress they reported (host API), and reports which of them were
-- cancelled or lost meanwhile.
--
-- KEYS[1] active     P:{Q}:active     (zset: lease deadline ms)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] lease_ms   new lease length from now
-- ARGV[4..]          5-tuples: seq, token, started (Unix ms the task started running; 0: waiting),
--                    progress (a fraction from 0 to 1, '' for no new report), progress message
-- Progress is written only under the caller's lease (fenced like a result) into `progress` and
-- `progress_msg`; complete.lua and reap.lua clear it when the attempt ends.
-- A started task is marked `running` = its lease token (and `started`), once: reap.lua counts an
-- expired lease as a failed attempt only when its task was seen running under that lease.
-- Returns {cancelled, lost, finished}, each a flat list of seq, token pairs: cancel was requested
-- for the first (the worker stops them); the second are leased to someone else or back in the
-- queue; the third have finished (normally: this worker's own result, written just before). The
-- worker stops the tasks of the last two lists and reports nothing for them. The token says which
-- claim of the task the answer is about.
local lease_ms = tonumber(ARGV[3])
local deadline = NOW + lease_ms
local cancelled, lost, finished = {}, {}, {}
local function add(list, seq, token)
  list[#list + 1] = tonumber(seq)
  list[#list + 1] = tonumber(token)
end
for i = 4, #ARGV, 5 do
  local seq, token, started, progress = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local tkey = task_key(seq)
  local f = redis.pcall('HMGET', tkey, 'state', 'lease', 'cancel', 'running')
  if type(f) ~= 'table' or f.err then f = {} end
  if f[2] ~= token then
    add(lost, seq, token)
  elseif FINISHED[f[1]] then
    add(finished, seq, token)
  elseif f[1] ~= 'active' then
    add(lost, seq, token)
  else
    redis.call('ZADD', KEYS[1], 'XX', deadline, seq)
    if started ~= '0' and f[4] ~= token then redis.call('HSET', tkey, 'running', token, 'started', started) end
    if progress ~= '' then redis.call('HSET', tkey, 'progress', progress, 'progress_msg', ARGV[i + 4]) end
    if f[3] then add(cancelled, seq, token) end
  end
end
return {cancelled, lost, finished}
