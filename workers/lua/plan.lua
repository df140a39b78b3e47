-- plan: count the steps a grown workflow will run, per agent, once per continuation.
--
-- A replayed step sends its continuation again (same message ids, so the steps dedupe); the
-- marker field makes the second count a no-op, so queued: counters cannot leak.
--
-- KEYS
--   task     the task hash
-- ARGV
--   marker   hash field naming the continuation ('plan:' .. its message id)
--   ttl      seconds the task hash is kept
--   counts   JSON object: agent -> steps planned
--
-- Returns 1 when counted, 0 when this continuation was counted before.

if redis.call('HSETNX', KEY.task, ARG.marker, '1') == 0 then return 0 end
for agent, count in pairs(cjson.decode(ARG.counts)) do
  redis.call('HINCRBY', KEY.task, 'queued:' .. agent, count)
end
redis.call('EXPIRE', KEY.task, ARG.ttl)
return 1
