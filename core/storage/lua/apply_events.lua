-- Count a batch of one forum's events of one kind, each at most once, atomically.
-- KEYS[1]  the forum's statistics    P:{f:F}:stats
-- KEYS[2]  the forum's change log    P:{f:F}:changes
-- KEYS[3]  the forum's outcome stream (decision log)   P:{f:F}:outcomes
-- KEYS[4..] the seen-markers of the batch's requests in this forum   P:{f:F}:seen:R
-- ARGV[1]  kind: 'i' impression, 'c' click
-- ARGV[2]  ttl of a new marker set (seconds)
-- ARGV[3]  how long the change log keeps a change (microseconds)
-- ARGV[4]  the forum window W (0: no windowed totals)
-- ARGV[5]  the outcome stream's cap (XADD MAXLEN ~; 0: no decision log, nothing appended)
-- ARGV[6..5+M] the request ids of the M markers KEYS[4..], in order (M = #KEYS - 3)
-- ARGV[6+M..] per event: the index of its request's marker among KEYS[4..] (1-based), the post
-- Returns per event 0 (already counted), 1 (counted) or 2 (a click that also counted its
-- missing impression). An impression also counts in the forum's windowed `_wi` when it is
-- among its post's first W, and then leaves the marker `w:<post>`, so that the click of that
-- impression, and only it, counts in `_wc`. Each event that counts, and only it, is appended to
-- the outcome stream in this same step: a duplicate appends nothing, and no crash can count an
-- event without its outcome. Built by core.storage.counting.apply_events_call.
-- include: note_changes
local function count_impression(stats, seen, post, window)
  local n = redis.call('HINCRBY', stats, 'i:' .. post, 1)
  redis.call('HINCRBY', stats, '_i', 1)
  if n > window then
    return false
  end
  redis.call('HINCRBY', stats, '_wi', 1)
  redis.call('SADD', seen, 'w:' .. post)
  return true
end

local stats, changes, outcomes = KEYS[1], KEYS[2], KEYS[3]
local kind, ttl, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local cap, markers = tonumber(ARGV[5]), #KEYS - 3
local results, changed, marked = {}, {}, {}
for i = 6 + markers, #ARGV, 2 do
  local marker = tonumber(ARGV[i])
  local seen, post = KEYS[3 + marker], ARGV[i + 1]
  local applied = 0
  if redis.call('SADD', seen, kind .. ':' .. post) == 1 then
    if not marked[seen] and redis.call('TTL', seen) < 0 then
      redis.call('EXPIRE', seen, ttl)
    end
    marked[seen] = true
    applied = 1
    local windowed
    if kind == 'i' then
      windowed = count_impression(stats, seen, post, window)
    elseif redis.call('SADD', seen, 'i:' .. post) == 1 then
      windowed = count_impression(stats, seen, post, window)
      applied = 2
    else
      windowed = window > 0 and redis.call('SISMEMBER', seen, 'w:' .. post) == 1
    end
    if kind == 'c' then
      redis.call('HINCRBY', stats, 'c:' .. post, 1)
      redis.call('HINCRBY', stats, '_c', 1)
      if windowed then
        redis.call('HINCRBY', stats, '_wc', 1)
      end
    end
    changed[#changed + 1] = post
    if cap > 0 then
      redis.call('XADD', outcomes, 'MAXLEN', '~', cap, '*',
                 'r', ARGV[5 + marker], 'p', post, 'k', kind)
    end
  end
  results[#results + 1] = applied
end
if #changed > 0 then
  note_changes(changes, changed, tonumber(ARGV[3]))
end
return results
