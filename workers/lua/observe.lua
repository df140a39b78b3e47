-- observe: resize a model's buckets to the limits the API announced, and never trust more
-- than it says is left (its anthropic-ratelimit-*-limit and -remaining headers).
--
-- KEYS
--   bucket                 the model's bucket hash (see lib/bucket.lua)
-- ARGV
--   limit_requests         announced limits ('' when the answer had no such header)
--   limit_input_tokens
--   limit_output_tokens
--   remaining_requests     what the API says is left ('' when absent)
--   remaining_input_tokens
--   remaining_output_tokens
--@include bucket

local limits = {ARG.limit_requests, ARG.limit_input_tokens, ARG.limit_output_tokens}
local remaining = {ARG.remaining_requests, ARG.remaining_input_tokens,
                   ARG.remaining_output_tokens}
for k, name in ipairs(BUCKETS) do
  local cap, left = tonumber(limits[k]), tonumber(remaining[k])
  if cap and cap > 0 then redis.call('HSET', KEY.bucket, 'cap_' .. name, tostring(cap)) end
  local level = redis.call('HGET', KEY.bucket, 'lvl_' .. name)
  if left and level and left < tonumber(level) then
    redis.call('HSET', KEY.bucket, 'lvl_' .. name, tostring(left))
  end
end
return 1
