-- schedule_fire: fires one tick of a periodic task, exactly once however many workers try: only
-- the caller that still sees the tick it read as the schedule's next due time enqueues the task
-- and moves the schedule on (compare-and-set).
--
-- KEYS[1..8] the queue's keys, as for enqueue.lua: seq, pending, delayed, meta, stats, modrefs,
--            signal, estimates
-- KEYS[9]    schedule-due  P:{Q}:schedule-due (zset: name -> next due ms)
-- ARGV[1]    base          P:{Q}:
-- ARGV[2]    clock         clock offset ms (0 outside tests)
-- ARGV[3]    name          the schedule
-- ARGV[4]    expected      the due time the caller read (Unix ms)
-- ARGV[5]    next          the schedule's next due time (Unix ms)
-- ARGV[6]    fire          1 to enqueue a task for this tick, 0 to skip it (missed-tick policy)
-- ARGV[7]    module        sha256
-- ARGV[8]    priority
-- ARGV[9]    expires_in    the task expires this long after it is enqueued if still waiting (ms;
--                          0: never)
-- ARGV[10..] further task fields as name, value pairs
-- Returns the new task's seq, 0 when the tick was skipped, or -1 when another caller got there
-- first (or the schedule was removed).
local K = {seq = KEYS[1], pending = KEYS[2], delayed = KEYS[3], meta = KEYS[4], stats = KEYS[5], modrefs = KEYS[6],
  signal = KEYS[7], estimates = KEYS[8]}
local name = ARGV[3]
local current = redis.call('ZSCORE', KEYS[9], name)
if not current or tonumber(current) ~= tonumber(ARGV[4]) then
  return -1
end
redis.call('ZADD', KEYS[9], tonumber(ARGV[5]), name)
if ARGV[6] ~= '1' then
  return 0
end
local extra = {}
for i = 10, #ARGV do extra[#extra + 1] = ARGV[i] end
local seq = add_task(K, 0, ARGV[7], tonumber(ARGV[8]), '', 0, extra, nil, nil, expiry_time(0, ARGV[9]))
return seq
