-- batch_claim: take up to `count` of a model's pending requests into a new batch record, in one
-- atomic call, before the batch is created at the provider: a batcher killed at any moment
-- after this leaves the record (state 'creating' and its custom_ids), never a request in
-- neither the pending set nor a batch.
--
-- KEYS
--   pending   the model's custom_ids not yet in a batch (keys.batch_pending)
--   requests  custom_id -> request (keys.BATCH_REQUESTS)
--   batches   local batch key -> batch record (keys.BATCHES)
-- ARGV
--   key       the new batch's local key
--   model     the model
--   count     most requests in one batch
--   now       seconds since the epoch
--
-- Returns the custom_ids taken (those whose request still exists), or an empty list.

local ids = redis.call('ZRANGE', KEY.pending, 0, tonumber(ARG.count) - 1)
if #ids == 0 then return {} end
redis.call('ZREM', KEY.pending, unpack(ids))
local taken = {}
for _, id in ipairs(ids) do
  if redis.call('HEXISTS', KEY.requests, id) == 1 then table.insert(taken, id) end
end
if #taken == 0 then return {} end
local record = {key = ARG.key, model = ARG.model, state = 'creating', custom_ids = taken,
                creating_at = tonumber(ARG.now), batch_id = ''}
redis.call('HSET', KEY.batches, ARG.key, cjson.encode(record))
return taken
