-- Start an experiment, unless one runs or the id was used before (atomic: one slot, {experiments}).
-- KEYS[1]  the serving state         P:{experiments}:serving
-- KEYS[2]  the experiment            P:{experiments}:experiment:ID
-- KEYS[3]  the history               P:{experiments}:history     (id -> start sequence)
-- KEYS[4]  every id ever started     P:{experiments}:ids
-- ARGV[1]  experiment id
-- ARGV[2]  its definition (canonical JSON: equal definitions are equal strings)
-- ARGV[3]  now (unix seconds)
-- ARGV[4]  how many experiments the history keeps (>= 1)
-- ARGV[5]  the experiment key without the id (P:{experiments}:experiment:), to drop the
--          records the history no longer keeps (same hash tag: same slot)
-- Returns {'created'}; {'same'} when it runs with this definition; {'changed'} when it runs
-- with another; {'stopped'} when the id was used and stopped; {'busy', id} when another runs.
-- Built by core.storage.experiments.start_experiment_call.
local serving, experiment, history, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, definition = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', ids, id) == 1 then
  if redis.call('HGET', experiment, 'status') ~= 'running' then
    return {'stopped'}
  end
  if redis.call('HGET', experiment, 'definition') == definition then
    return {'same'}
  end
  return {'changed'}
end
local running = redis.call('HGET', serving, 'experiment')
if running and running ~= '' then
  return {'busy', running}
end
local version = redis.call('HINCRBY', serving, 'version', 1)
redis.call('HSET', experiment, 'definition', definition, 'status', 'running', 'started_at', ARGV[3])
redis.call('SADD', ids, id)
redis.call('ZADD', history, version, id)
redis.call('HSET', serving, 'experiment', id, 'definition', definition)
local extra = redis.call('ZCARD', history) - tonumber(ARGV[4])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', history, 0, extra - 1)) do
    redis.call('DEL', ARGV[5] .. old)
  end
  redis.call('ZREMRANGEBYRANK', history, 0, extra - 1)
end
return {'created'}
