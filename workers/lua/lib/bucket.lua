-- bucket: a model's token buckets (requests, input tokens, output tokens per minute), refilled
-- continuously like the API's own. The hash holds, per bucket n in r, i, o: cap_<n> (a limit
-- the API announced; else the configured one applies) and lvl_<n> (tokens left at ts), plus
-- ts and paused_until, all in seconds of Redis's clock.

local BUCKETS = {'r', 'i', 'o'}

local function bucket_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
