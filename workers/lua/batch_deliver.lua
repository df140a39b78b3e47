-- batch_deliver: hand one batch result to its step, in one atomic call: the result is stored
-- by attempt in the step's batch hash, the request leaves the waiting set, and the step's
-- resume signature goes to the outbox that the batcher publishes from. A result delivered
-- twice (a batcher that died before it finished a batch) changes nothing the second time.
--
-- KEYS
--   step      the step's batch hash (keys.batch_step)
--   task      the task hash
--   requests  custom_id -> request (keys.BATCH_REQUESTS)
--   outbox    custom_id -> resume signature to publish (keys.BATCH_OUTBOX)
-- ARGV
--   custom_id  the request's custom_id
--   attempt    its attempt
--   result     the result, JSON (workers/batch_results.py)
--   ttl        seconds the step's batch hash lives
--
-- Returns 1 when the result is new, 0 when it was delivered before.

redis.call('HDEL', KEY.requests, ARG.custom_id)
if redis.call('HSETNX', KEY.step, 'res:' .. ARG.attempt, ARG.result) == 0 then return 0 end
redis.call('EXPIRE', KEY.step, ARG.ttl)
if tonumber(redis.call('HGET', KEY.task, 'parked') or '0') > 0 then
  redis.call('HINCRBY', KEY.task, 'parked', -1)
end
local resume = redis.call('HGET', KEY.step, 'park')
if resume then redis.call('HSET', KEY.outbox, ARG.custom_id, resume) end
return 1
