-- refund: give back what a call's estimate took beyond its real usage (negative: take more).
--
-- KEYS
--   bucket         the model's bucket hash (see lib/bucket.lua)
-- ARGV
--   requests       requests to give back (0)
--   input_tokens   prompt tokens to give back
--   output_tokens  output tokens to give back
--   rpm            configured limits per minute (a bucket never holds more than its cap)
--   itpm
--   otpm
--@include bucket

local given = {ARG.requests, ARG.input_tokens, ARG.output_tokens}
local configured = {ARG.rpm, ARG.itpm, ARG.otpm}
for k, name in ipairs(BUCKETS) do
  local level = redis.call('HGET', KEY.bucket, 'lvl_' .. name)
  if level then
    local cap = tonumber(redis.call('HGET', KEY.bucket, 'cap_' .. name) or configured[k])
    local refilled = math.min(cap, tonumber(level) + tonumber(given[k]))
    redis.call('HSET', KEY.bucket, 'lvl_' .. name, tostring(refilled))
  end
end
return 1
