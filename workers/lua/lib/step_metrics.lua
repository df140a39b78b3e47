-- step_metrics: the fleet-wide counters `chorus metrics` exports, kept in one hash as
-- `name|agent|model[|extra]` -> value and counted in the call that records the step.
--
-- count_usage(m, agent, model, u)       calls, tokens, cost and retries of one step's calls
--   u: {calls, input_tokens, output_tokens, cache_creation_input_tokens,
--       cache_read_input_tokens, cost_micro_usd, retries}
-- count_step(m, agent, model, status, error_code, seconds)
--   one step by outcome, an error by its stable code, and the latency histogram (cumulative
--   buckets; latency_count is the +Inf bucket)

local LATENCY_BUCKETS = {'0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '120'}

local function count_usage(m, agent, model, u)
  local labels = agent .. '|' .. model
  redis.call('HINCRBY', m, 'calls|' .. labels, u.calls)
  redis.call('HINCRBY', m, 'input_tokens|' .. labels, u.input_tokens)
  redis.call('HINCRBY', m, 'output_tokens|' .. labels, u.output_tokens)
  redis.call('HINCRBY', m, 'cache_creation_input_tokens|' .. labels, u.cache_creation_input_tokens)
  redis.call('HINCRBY', m, 'cache_read_input_tokens|' .. labels, u.cache_read_input_tokens)
  redis.call('HINCRBY', m, 'cost_micro_usd|' .. labels, u.cost_micro_usd)
  redis.call('HINCRBY', m, 'retries|' .. labels, u.retries)
end

local function count_step(m, agent, model, status, error_code, seconds)
  local labels = agent .. '|' .. model
  redis.call('HINCRBY', m, 'steps|' .. labels .. '|' .. status, 1)
  if error_code ~= '' then redis.call('HINCRBY', m, 'errors|' .. agent .. '|' .. error_code, 1) end
  seconds = tonumber(seconds)
  redis.call('HINCRBYFLOAT', m, 'latency_sum|' .. labels, seconds)
  redis.call('HINCRBY', m, 'latency_count|' .. labels, 1)
  for _, le in ipairs(LATENCY_BUCKETS) do
    if seconds <= tonumber(le) then
      redis.call('HINCRBY', m, 'latency_bucket|' .. labels .. '|' .. le, 1)
    end
  end
end
