-- Remember a served slate for attribution, unless it holds a post the member clicked recently
-- or was shown as often as the seen-limit allows.
-- KEYS[1]  the served slate          P:{u:T}:served:R
-- KEYS[2]  the member's clicks       P:{u:T}:clicked:U   (same member tag T: one slot)
-- KEYS[3]  the member's impressions  P:{u:T}:shown:U     (core.storage.shown)
-- ARGV[1]  ttl of the slate (seconds)
-- ARGV[2]  clicked since (unix seconds), or '' for no check
-- ARGV[3]  shown since (unix seconds), or '' for no seen-limit
-- ARGV[4]  the seen-limit: impressions of a post, without a click, that hide it
-- ARGV[5..] the slate's hash, field/value pairs: 'u' member, 'p' policy, 'x' experiment and
--          'v' variant (when one served it), '#'..post -> forum
-- Returns {1} when the slate was written; else (nothing is written) {0, the member's posts
-- clicked since (none without that check), the posts at the seen-limit}. A post is at the
-- limit when KEYS[3] holds that many of its impressions '<post>#<request>' served since
-- ARGV[3] and after its click entry '<post>' (the member's last click on it), if any.
-- Built by core.storage.serving.serve_slate_call.
local served, clicked, shown = KEYS[1], KEYS[2], KEYS[3]
local since, shown_since, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])

-- The posts at the seen-limit, sorted, and the same as a set.
local function at_limit()
  local counts, reset = {}, {}
  local entries = redis.call('ZRANGEBYSCORE', shown, shown_since, '+inf', 'WITHSCORES')
  for i = 1, #entries, 2 do
    local entry, at = entries[i], tonumber(entries[i + 1])
    local cut = string.find(entry, '#', 1, true)
    if not cut then
      reset[entry], counts[entry] = at, 0
    else
      local post = string.sub(entry, 1, cut - 1)
      if not reset[post] or at > reset[post] then
        counts[post] = (counts[post] or 0) + 1
      end
    end
  end
  local posts, set = {}, {}
  for post, n in pairs(counts) do
    if n >= limit then
      posts[#posts + 1], set[post] = post, true
    end
  end
  table.sort(posts)
  return posts, set
end

local limited, hidden = {}, {}
if shown_since ~= '' then
  limited, hidden = at_limit()
end
local refused = false
for i = 5, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 1) == '#' then
    local post = string.sub(ARGV[i], 2)
    if hidden[post] then
      refused = true
      break
    end
    if since ~= '' then
      local at = redis.call('ZSCORE', clicked, post)
      if at and tonumber(at) >= tonumber(since) then
        refused = true
        break
      end
    end
  end
end
if refused then
  local recent = {}
  if since ~= '' then
    recent = redis.call('ZRANGEBYSCORE', clicked, since, '+inf')
  end
  return {0, recent, limited}
end
redis.call('HSET', served, unpack(ARGV, 5, #ARGV))
redis.call('EXPIRE', served, ARGV[1])
return {1}
