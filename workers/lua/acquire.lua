-- acquire: take one request and a call's tokens from a model's buckets, or say how long to
-- wait until they are there (taking nothing meanwhile).
--
-- KEYS
--   bucket         the model's bucket hash (see lib/bucket.lua)
-- ARGV
--   requests       requests the call takes (1)
--   input_tokens   its estimated prompt
--   output_tokens  its max_tokens
--   rpm            configured limits per minute, used until the API announces its own;
--   itpm           0 means unknown (that bucket is not enforced)
--   otpm
--
-- Returns the seconds to wait, as a string: '0' when taken.
--@include bucket

local h = KEY.bucket
local now = bucket_now()
local paused = tonumber(redis.call('HGET', h, 'paused_until') or '0')
if paused > now then return tostring(paused - now) end
local elapsed = math.max(0, now - tonumber(redis.call('HGET', h, 'ts') or tostring(now)))
local wanted = {tonumber(ARG.requests), tonumber(ARG.input_tokens), tonumber(ARG.output_tokens)}
local configured = {ARG.rpm, ARG.itpm, ARG.otpm}
local levels, needs, caps = {}, {}, {}
local wait = 0
for k, name in ipairs(BUCKETS) do
  local cap = tonumber(redis.call('HGET', h, 'cap_' .. name) or configured[k])
  caps[k] = cap
  if cap > 0 then
    local level = tonumber(redis.call('HGET', h, 'lvl_' .. name) or tostring(cap))
    levels[k] = math.min(cap, level + elapsed * cap / 60)
    needs[k] = math.min(wanted[k], cap)
    if levels[k] < needs[k] then wait = math.max(wait, (needs[k] - levels[k]) * 60 / cap) end
  end
end
for k, name in ipairs(BUCKETS) do
  if caps[k] > 0 then
    local level = levels[k]
    if wait == 0 then level = level - needs[k] end
    redis.call('HSET', h, 'lvl_' .. name, tostring(level))
  end
end
redis.call('HSET', h, 'ts', tostring(now))
redis.call('EXPIRE', h, 3600)
return tostring(wait)
