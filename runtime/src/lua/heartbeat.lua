-- heartbeat: extends the leases of the tasks a worker still runs and reports which of them were
-- cancelled or lost meanwhile.
--
-- KEYS[1] active     P:{Q}:active     (zset: lease deadline ms)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] lease_ms   new lease length from now
-- ARGV[4..]          pairs: seq, token
-- Returns {cancelled_seqs, lost_seqs, finished_seqs}: cancel was requested for the first (the
-- worker stops them); the second are leased to someone else or back in the queue; the third have
-- finished (normally: this worker's own result, written just before). The worker stops the tasks
-- of the last two lists and reports nothing for them.
local base, now, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cancelled, lost, finished = {}, {}, {}
for i = 4, #ARGV, 2 do
  local seq, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', base .. 'task:' .. seq, 'state', 'lease', 'cancel')
  if f[1] == 'succeeded' or f[1] == 'dead' or f[1] == 'cancelled' then
    finished[#finished + 1] = tonumber(seq)
  elseif f[1] ~= 'active' or f[2] ~= token then
    lost[#lost + 1] = tonumber(seq)
  else
    redis.call('ZADD', KEYS[1], 'XX', now + lease_ms, seq)
    if f[3] == '1' then cancelled[#cancelled + 1] = tonumber(seq) end
  end
end
return {cancelled, lost, finished}
