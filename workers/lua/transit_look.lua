-- transit_look: one atomic look at one transit-ledger entry (see workers/transit.py): is its
-- message still on its way, lost in kombu's BRPOP window, or to be put back?
--
-- KEYS
--   ledger       Celery task id -> {queue key, element} of a message published, not received
--   index        the same ids by when they were published (or last seen on their way)
--   suspects     id -> when the message was first found in no queue and no `unacked` hash
--   restores     id -> how often it was put back
--   unacked      kombu's hash of messages workers hold
--   queue        the Redis list the message was pushed onto
-- ARGV
--   task_id      the entry's id
--   entry        the entry as the reaper read it (a changed entry is not this look's)
--   element      the message as pushed
--   redelivered  the same message as kombu writes it back after a visibility-timeout restore
--   delivery_tag its kombu delivery tag (its field in `unacked`)
--   now          seconds since the epoch
--   confirm      seconds between the two looks that find it lost before it is put back
--
-- Returns 0 gone (received meanwhile), 1 on its way, 2 suspect (looked again later), 3 put
-- back on its queue.

if redis.call('HGET', KEY.ledger, ARG.task_id) ~= ARG.entry then
  redis.call('HDEL', KEY.suspects, ARG.task_id)
  return 0
end
if redis.call('HEXISTS', KEY.unacked, ARG.delivery_tag) == 1
   or redis.call('LPOS', KEY.queue, ARG.element)
   or redis.call('LPOS', KEY.queue, ARG.redelivered) then
  redis.call('ZADD', KEY.index, ARG.now, ARG.task_id)
  redis.call('HDEL', KEY.suspects, ARG.task_id)
  return 1
end
local since = redis.call('HGET', KEY.suspects, ARG.task_id)
if not since then
  redis.call('HSET', KEY.suspects, ARG.task_id, ARG.now)
  return 2
end
if tonumber(ARG.now) - tonumber(since) < tonumber(ARG.confirm) then return 2 end
redis.call('RPUSH', KEY.queue, ARG.element)
redis.call('HDEL', KEY.suspects, ARG.task_id)
redis.call('ZADD', KEY.index, ARG.now, ARG.task_id)
redis.call('HINCRBY', KEY.restores, ARG.task_id, 1)
return 3
