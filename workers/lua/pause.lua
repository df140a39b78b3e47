-- pause: a 429 asked to wait; every worker of the fleet waits for this model until then.
--
-- KEYS
--   bucket   the model's bucket hash (see lib/bucket.lua)
-- ARGV
--   seconds  how long from now (a later pause already set stands)
--@include bucket

local resume = bucket_now() + tonumber(ARG.seconds)
if resume > tonumber(redis.call('HGET', KEY.bucket, 'paused_until') or '0') then
  redis.call('HSET', KEY.bucket, 'paused_until', tostring(resume))
end
return 1
