-- audit: the audit event, appended in the same atomic call as the change it records, so the
-- audit trail costs no round trip on the hot path and never misses a change.
--
-- audit(cfg, task_key, task_id, kind, fields)
--   cfg       {stream = key, maxlen = n, minid = id}: maxlen '0' switches the stream off;
--             minid '' keeps events of any age, else older ones are trimmed (XTRIM MINID ~)
--   task_key  the task hash, whose fields (but the root message) go along as a snapshot;
--             '' or a task that does not exist sends none
--   task_id   the task the event belongs to
--   kind      submitted, started, step, duplicate_step, dead_letter, review_opened, ...
--   fields    a flat list of further field names and values

local function audit(cfg, task_key, task_id, kind, fields)
  if cfg.maxlen == '0' then return end
  local args = {cfg.stream, 'MAXLEN', '~', cfg.maxlen, '*', 'kind', kind, 'task_id', task_id}
  if task_key ~= '' then
    local flat = redis.call('HGETALL', task_key)
    if #flat > 0 then
      local snapshot = {}
      for i = 1, #flat, 2 do
        if flat[i] ~= 'root_message' then snapshot[flat[i]] = flat[i + 1] end
      end
      table.insert(args, 'task')
      table.insert(args, cjson.encode(snapshot))
    end
  end
  for _, value in ipairs(fields) do table.insert(args, value) end
  redis.call('XADD', unpack(args))
  if cfg.minid ~= '' then redis.call('XTRIM', cfg.stream, 'MINID', '~', cfg.minid) end
end
