-- repolicy: after a queue's policy changed, moves every pending task into the structure of the
-- new policy (see lib.lua), in the new policy's order, dropping tombstones, in the queue's pool
-- and in every group's. O(n log n) in the pending tasks: changing the policy of a queue with a
-- million pending tasks blocks Redis for about a second.
--
-- KEYS[1] pending    P:{Q}:pending    (zset, the wsjf structure)
-- KEYS[2] meta       P:{Q}:meta       (hash: the new policy)
-- KEYS[3] estimates  P:{Q}:estimates  (hash)
-- KEYS[4] stats      P:{Q}:stats      (hash: the tombstones counter)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (unused)
-- Returns the number of tasks moved.
local pol = queue_policy(KEYS[2])
-- Takes every entry out of a pool's zset (see lib.lua: the queue's, or a group's, which has
-- nothing else).
local seqs = {}
local function collect(prefix)
  for _, s in ipairs(redis.call('ZRANGE', prefix .. 'pending', 0, -1)) do seqs[#seqs + 1] = s end
  redis.call('DEL', prefix .. 'pending')
end
collect(BASE)
-- The queue's own priority lists.
local levels_key = BASE .. 'levels'
for _, level in ipairs(redis.call('ZRANGE', levels_key, 0, -1)) do
  local list = BASE .. 'p:' .. level
  for _, s in ipairs(redis.call('LRANGE', list, 0, -1)) do seqs[#seqs + 1] = s end
  redis.call('DEL', list)
end
redis.call('DEL', levels_key)
-- Every group with work has a state (ready, parked or rate-parked); an idle one has no entries.
for _, g in ipairs(redis.call('HKEYS', BASE .. 'groups:state')) do
  if g ~= '' then collect(pool_prefix(g)) end
end
redis.call('HDEL', KEYS[4], 'tombstones', 'grouped_pending')
local entries = {}
for _, s in ipairs(seqs) do
  local f = redis.call('HMGET', task_key(s), 'state', 'priority', 'group')
  if f[1] == 'pending' then
    entries[#entries + 1] = {seq = s, n = tonumber(s), prio = tonumber(f[2]) or 0, group = f[3]}
  end
end
if pol.policy == 'priority' then
  table.sort(entries, function(a, b)
    if a.prio ~= b.prio then return a.prio > b.prio end
    return a.n < b.n
  end)
else
  table.sort(entries, function(a, b) return a.n < b.n end)
end
for _, e in ipairs(entries) do
  push_pending(pol, e.seq, e.prio, false, e.group)
end
return #entries
