-- batch_lead: take or keep the batcher's leadership (one leader in the fleet at a time).
--
-- KEYS
--   lock   the leadership lock (keys.BATCH_LOCK)
-- ARGV
--   token  this batcher's token (host, pid and a random part)
--   ttl_ms how long the lock lives unless renewed
--
-- Returns 1 when the caller led already (renewed), 2 when it just took the lead (a takeover:
-- it must recover what an earlier leader left), 0 when another batcher leads.

if redis.call('GET', KEY.lock) == ARG.token then
  redis.call('PEXPIRE', KEY.lock, ARG.ttl_ms)
  return 1
end
if redis.call('SET', KEY.lock, ARG.token, 'NX', 'PX', ARG.ttl_ms) then return 2 end
return 0
