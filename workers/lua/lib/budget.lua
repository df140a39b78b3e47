-- budget: a task's hard limits in tokens and micro-dollars, shared by the budget's own scripts
-- and by the step's begin and record scripts (which hold and settle in the same round trip as
-- the step's state). The budget hash holds:
--   tokens, micro_usd   what is spent plus what is held
--   r:<field>           one outstanding hold, '<tokens>:<micro_usd>'; <field> is the input
--                       message id and call number, so a redelivery re-running the same call
--                       replaces the hold of the run that died instead of adding a second
--   s:<token>           a settlement that was applied (its token is new for every
--                       Settlement): the same call sent again, after a Redis restart lost its
--                       reply, finds it and settles nothing twice

local function parse_hold(value)
  if not value then return 0, 0 end
  local tokens, usd = string.match(value, '(%d+):(%d+)')
  return tonumber(tokens), tonumber(usd)
end

-- Replace the hold `field` by what the call cost (mode 'settle') or by nothing ('release').
-- What a call cost stays spent: a second delivery of the same message that paid for the same
-- call again adds its own cost, as the provider billed both. `token` ('' for none) names this
-- settlement, which is applied once.
local function settle_budget(budget, field, tokens, usd, mode, ttl, token)
  if token ~= '' and redis.call('HSETNX', budget, 's:' .. token, '1') == 0 then return end
  local held_tokens, held_usd = parse_hold(redis.call('HGET', budget, 'r:' .. field))
  redis.call('HDEL', budget, 'r:' .. field)
  if mode ~= 'settle' then tokens, usd = 0, 0 end
  redis.call('HINCRBY', budget, 'tokens', tokens - held_tokens)
  redis.call('HINCRBY', budget, 'micro_usd', usd - held_usd)
  redis.call('EXPIRE', budget, ttl)
end

-- Hold a call's worst case, or return why it does not fit: {what, used, want, limit}.
local function reserve_budget(task, budget, field, tokens, usd, default_tokens, default_usd, ttl)
  local limit_tokens = tonumber(redis.call('HGET', task, 'budget_tokens') or default_tokens)
  local limit_usd = tonumber(redis.call('HGET', task, 'budget_micro_usd') or default_usd)
  local held_tokens, held_usd = parse_hold(redis.call('HGET', budget, 'r:' .. field))
  local used_tokens = tonumber(redis.call('HGET', budget, 'tokens') or '0') - held_tokens
  local used_usd = tonumber(redis.call('HGET', budget, 'micro_usd') or '0') - held_usd
  if used_tokens + tokens > limit_tokens then
    return {'tokens', used_tokens, tokens, limit_tokens}
  end
  if used_usd + usd > limit_usd then
    return {'micro_usd', used_usd, usd, limit_usd}
  end
  redis.call('HSET', budget, 'r:' .. field, tokens .. ':' .. usd,
             'tokens', used_tokens + tokens, 'micro_usd', used_usd + usd)
  redis.call('EXPIRE', budget, ttl)
  return nil
end
