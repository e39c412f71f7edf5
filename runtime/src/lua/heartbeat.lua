-- heartbeat: extends the leases of the tasks a worker still holds, records which of them have
-- started running, and reports which of them were cancelled or lost meanwhile.
--
-- KEYS[1] active     P:{Q}:active     (zset: lease deadline ms)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] lease_ms   new lease length from now
-- ARGV[4..]          triples: seq, token, started (Unix ms the task started running; 0: waiting)
-- A started task is marked `running` = its lease token (and `started`), once: reap.lua counts an
-- expired lease as a failed attempt only when its task was seen running under that lease.
-- Returns {cancelled_seqs, lost_seqs, finished_seqs}: cancel was requested for the first (the
-- worker stops them); the second are leased to someone else or back in the queue; the third have
-- finished (normally: this worker's own result, written just before). The worker stops the tasks
-- of the last two lists and reports nothing for them.
local base, now, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cancelled, lost, finished = {}, {}, {}
for i = 4, #ARGV, 3 do
  local seq, token, started = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local task_key = base .. 'task:' .. seq
  local f = redis.pcall('HMGET', task_key, 'state', 'lease', 'cancel', 'running')
  if type(f) ~= 'table' or f.err then f = {} end
  if f[1] == 'succeeded' or f[1] == 'dead' or f[1] == 'cancelled' then
    finished[#finished + 1] = tonumber(seq)
  elseif f[1] ~= 'active' or f[2] ~= token then
    lost[#lost + 1] = tonumber(seq)
  else
    redis.call('ZADD', KEYS[1], 'XX', now + lease_ms, seq)
    if started ~= '0' and f[4] ~= token then redis.call('HSET', task_key, 'running', token, 'started', started) end
    if f[3] == '1' then cancelled[#cancelled + 1] = tonumber(seq) end
  end
end
return {cancelled, lost, finished}
