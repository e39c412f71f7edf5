-- worker_beat: a live worker's entry in the registry of workers (`wasmq workers`), written every
-- second whether or not the worker holds tasks. The entry expires `ttl_ms` after its last beat,
-- so a worker that stops or dies disappears within a few seconds; the index forgets entries
-- older than that on every beat, so it stays as long as the list of live workers.
--
-- KEYS[1] index    P:{~workers}:index     (zset: worker id -> last beat ms)
-- KEYS[2] worker   P:{~workers}:w:<id>    (hash: the worker's description)
-- ARGV[1] base     P:{~workers}:
-- ARGV[2] clock    clock offset ms (0 outside tests)
-- ARGV[3] id       the worker's id
-- ARGV[4] ttl_ms   how long the entry lives without a beat
-- ARGV[5..]        fields of the description as name, value pairs (host, pid, queues, busy, ...)
-- Returns 1.
local id, ttl = ARGV[3], tonumber(ARGV[4])
local fields = {'seen', NOW_S}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], NOW, id)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', NOW - ttl)
return 1
