-- Record a member's impressions or clicks for the seen-limit, and which posts are at it.
-- KEYS[1]  the member's impressions  P:{u:T}:shown:U    (one member tag T: one slot)
-- KEYS[2]  the member's posts at the seen-limit   P:{u:T}:limited:U
-- KEYS[3]  ('c' with a re-click window only) the member's clicked posts  P:{u:T}:clicked:U
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  the window (seconds): entries older than now minus this are dropped
-- ARGV[3]  the seen-limit L (>= 1)
-- ARGV[4]  entries kept at most: the oldest beyond are dropped
-- ARGV[5]  kind: 'i' impressions, 'c' clicks
-- ARGV[6]  ('c') the re-click window R (seconds), or '' (KEYS[3] is not written)
-- ARGV[7..] pairs: for 'i' the entry '<post>#<request>' (the random part of the request id)
--          and when its slate was served; for
--          'c' the post and when its click was accepted (an earlier click's time only moves
--          forward)
-- Then each post whose entries changed is counted again: its impressions served within the
-- window and after its click entry, if any. With n >= L of them, served at t1 <= ... <= tn,
-- it is at the limit until t(n-L+1) plus the window (KEYS[2], post -> that time); else it
-- leaves KEYS[2]. Writing an entry again changes nothing: a replay is a no-op. Both keys
-- expire a window after the last write. With R, each clicked post is also noted in KEYS[3],
-- scored by now, whose entries older than R are dropped and which expires R after this write
-- (what core.storage.serving.Serving.remember_clicks does, in this step rather than three
-- commands a member). Built by core.storage.shown.record_shown_call.
local shown, limited = KEYS[1], KEYS[2]
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keep, kind = tonumber(ARGV[4]), ARGV[5]
local since = now - window
local reclick = tonumber(ARGV[6])
local touched = {}

local function post_of(entry)
  local cut = string.find(entry, '#', 1, true)
  return cut and string.sub(entry, 1, cut - 1) or entry
end

-- One variadic ZADD per 500 entries (GT for clicks: a time only moves forward), rather than
-- a call per entry.
local option = kind == 'c' and 'GT' or nil
for first = 7, #ARGV, 1000 do
  local scored = {}
  for i = first, math.min(first + 998, #ARGV - 1), 2 do
    scored[#scored + 1] = ARGV[i + 1]
    scored[#scored + 1] = ARGV[i]
    touched[post_of(ARGV[i])] = true
  end
  if option then
    redis.call('ZADD', shown, option, unpack(scored))
  else
    redis.call('ZADD', shown, unpack(scored))
  end
end
redis.call('ZREMRANGEBYSCORE', shown, '-inf', '(' .. since)
local over = redis.call('ZCARD', shown) - keep
if over > 0 then
  for _, entry in ipairs(redis.call('ZRANGE', shown, 0, over - 1)) do
    touched[post_of(entry)] = true
  end
  redis.call('ZREMRANGEBYRANK', shown, 0, over - 1)
end

-- The served times of each touched post's impressions since its click, ascending.
local times = {}
local entries = redis.call('ZRANGEBYSCORE', shown, since, '+inf', 'WITHSCORES')
for i = 1, #entries, 2 do
  local entry, at = entries[i], entries[i + 1]
  local post = post_of(entry)
  if touched[post] then
    if entry == post then
      times[post] = {}
    else
      times[post] = times[post] or {}
      table.insert(times[post], at)
    end
  end
end
local at_limit, below = {}, {}
for post in pairs(touched) do
  local served = times[post] or {}
  if #served >= limit then
    at_limit[#at_limit + 1] = tonumber(served[#served - limit + 1]) + window
    at_limit[#at_limit + 1] = post
  else
    below[#below + 1] = post
  end
end
for first = 1, #at_limit, 1000 do
  redis.call('ZADD', limited, unpack(at_limit, first, math.min(first + 999, #at_limit)))
end
for first = 1, #below, 500 do
  redis.call('ZREM', limited, unpack(below, first, math.min(first + 499, #below)))
end
redis.call('ZREMRANGEBYSCORE', limited, '-inf', '(' .. now)
redis.call('EXPIRE', shown, window)
redis.call('EXPIRE', limited, window)

if kind == 'c' and reclick then
  local clicked = KEYS[3]
  for first = 7, #ARGV, 1000 do
    local scored = {}
    for i = first, math.min(first + 998, #ARGV - 1), 2 do
      scored[#scored + 1] = ARGV[1]
      scored[#scored + 1] = ARGV[i]
    end
    redis.call('ZADD', clicked, unpack(scored))
  end
  redis.call('ZREMRANGEBYSCORE', clicked, '-inf', now - reclick)
  redis.call('EXPIRE', clicked, reclick)
end
return 0
