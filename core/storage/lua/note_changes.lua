-- Shared helper, included by the loader (core/storage/scripts.py) in the scripts that declare
-- "-- include: note_changes".
-- note_changes(changes, posts, keep_us): note that `posts` changed, at the server's clock in
-- microseconds (a reader's cursor is that clock at its read, less a margin), and forget
-- changes older than `keep_us` whenever the log grows.
local function note_changes(changes, posts, keep_us)
  local t = redis.call('TIME')
  local at = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local added = 0
  for first = 1, #posts, 500 do
    local scored = {}
    for i = first, math.min(first + 499, #posts) do
      scored[#scored + 1] = at
      scored[#scored + 1] = posts[i]
    end
    added = added + redis.call('ZADD', changes, unpack(scored))
  end
  if added > 0 then
    redis.call('ZREMRANGEBYSCORE', changes, '-inf', at - keep_us)
  end
end
