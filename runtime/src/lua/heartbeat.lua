-- heartbeat: extends the leases of the tasks a worker still runs and reports which of them were
-- cancelled or lost meanwhile.
--
-- KEYS[1] active     P:{Q}:active     (zset: lease deadline ms)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] now        Unix ms
-- ARGV[3] lease_ms   new lease length from now
-- ARGV[4..]          pairs: seq, token
-- Returns {cancelled_seqs, lost_seqs}: cancel was requested for the first (the worker stops them),
-- the second are no longer leased by this caller (it stops them and reports nothing).
local base, now, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cancelled, lost = {}, {}
for i = 4, #ARGV, 2 do
  local seq, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', base .. 'task:' .. seq, 'state', 'lease', 'cancel')
  if f[1] ~= 'active' or f[2] ~= token then
    lost[#lost + 1] = tonumber(seq)
  else
    redis.call('ZADD', KEYS[1], 'XX', now + lease_ms, seq)
    if f[3] == '1' then cancelled[#cancelled + 1] = tonumber(seq) end
  end
end
return {cancelled, lost}
