-- Remember a served slate for attribution, unless it holds a post the member clicked recently.
-- KEYS[1]  the served slate          P:{u:T}:served:R
-- KEYS[2]  the member's clicks       P:{u:T}:clicked:U   (same member tag T: one slot)
-- ARGV[1]  ttl of the slate (seconds)
-- ARGV[2]  clicked since (unix seconds), or '' for no check
-- ARGV[3..] the slate's hash, field/value pairs: 'u' member, 'p' policy, 'x' experiment and
--          'v' variant (when one served it), '#'..post -> forum
-- Returns {1} when the slate was written; {0, the member's posts clicked since} when it holds
-- one of them (nothing is written). Built by core.storage.serving.serve_slate_call.
local served, clicked = KEYS[1], KEYS[2]
local since = ARGV[2]
if since ~= '' then
  for i = 3, #ARGV, 2 do
    if string.sub(ARGV[i], 1, 1) == '#' then
      local at = redis.call('ZSCORE', clicked, string.sub(ARGV[i], 2))
      if at and tonumber(at) >= tonumber(since) then
        return {0, redis.call('ZRANGEBYSCORE', clicked, since, '+inf')}
      end
    end
  end
end
redis.call('HSET', served, unpack(ARGV, 3, #ARGV))
redis.call('EXPIRE', served, ARGV[1])
return {1}
