-- purge: deletes finished tasks of one state that finished before a cutoff.
--
-- KEYS[1] set        P:{Q}:succeeded | P:{Q}:dead | P:{Q}:cancelled (zset: finish ms)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] older_ms   tasks finished at least this long ago are deleted
-- ARGV[4] limit      most tasks per call (the caller repeats until 0 is returned)
-- Returns the number of tasks deleted.
return delete_finished(KEYS[1], NOW - math.max(tonumber(ARGV[3]) or 0, 0), 0, tonumber(ARGV[4]))
