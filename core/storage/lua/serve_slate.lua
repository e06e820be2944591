-- Remember a served slate for attribution, unless it holds a post the member clicked recently
-- or was shown as often as the seen-limit allows.
-- KEYS[1]  the served slate          P:{u:T}:served:R
-- KEYS[2]  the member's clicks       P:{u:T}:clicked:U   (same member tag T: one slot)
-- KEYS[3]  the member's posts at the seen-limit, post -> until when   P:{u:T}:limited:U
--          (written by lua/record_shown.lua)
-- ARGV[1]  ttl of the slate (seconds)
-- ARGV[2]  clicked since (unix seconds), or '' for no check
-- ARGV[3]  now (unix seconds) for the seen-limit, or '' for no seen-limit
-- ARGV[4..] the slate's hash, field/value pairs: 'u' member, 'p' policy, 'x' experiment and
--          'v' variant (when one served it), '#'..post -> forum
-- Returns {1} when the slate was written; else (nothing is written) {0, the member's posts
-- clicked since (none without that check), the posts at the seen-limit now (none without
-- it)}. Built by core.storage.serving.serve_slate_call.
local served, clicked, limited = KEYS[1], KEYS[2], KEYS[3]
local since, now = ARGV[2], ARGV[3]

local function found(key, post, from)
  local at = redis.call('ZSCORE', key, post)
  return at and tonumber(at) >= tonumber(from)
end

local refused = false
for i = 4, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 1) == '#' then
    local post = string.sub(ARGV[i], 2)
    if (since ~= '' and found(clicked, post, since)) or (now ~= '' and found(limited, post, now))
    then
      refused = true
      break
    end
  end
end
if refused then
  local recent, at_limit = {}, {}
  if since ~= '' then
    recent = redis.call('ZRANGEBYSCORE', clicked, since, '+inf')
  end
  if now ~= '' then
    at_limit = redis.call('ZRANGEBYSCORE', limited, now, '+inf')
  end
  return {0, recent, at_limit}
end
redis.call('HSET', served, unpack(ARGV, 4, #ARGV))
redis.call('EXPIRE', served, ARGV[1])
return {1}
