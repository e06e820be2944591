-- Count a batch of one forum's events of one kind, each at most once, atomically.
-- KEYS[1]  the forum's statistics    P:{f:F}:stats
-- KEYS[2]  the forum's change log    P:{f:F}:changes
-- KEYS[3]  the forum's outcome stream (decision log)   P:{f:F}:outcomes
-- KEYS[4..3+2E] per experiment e of the batch's slates (E of them), in order: its variants'
--          counts P:{f:F}:vstats:X and its results counters P:{f:F}:xres:X
-- KEYS[4+2E..] the seen-markers of the batch's requests in this forum   P:{f:F}:seen:R
-- ARGV[1]  kind: 'i' impression, 'c' click
-- ARGV[2]  ttl of a new marker set (seconds)
-- ARGV[3]  how long the change log keeps a change (microseconds)
-- ARGV[4]  the forum window W (0: no windowed totals)
-- ARGV[5]  the outcome stream's cap (XADD MAXLEN ~; 0: no decision log, nothing appended)
-- ARGV[6]  E, the number of experiments
-- ARGV[7]  ttl of the experiments' keys (seconds), set again whenever they are written
-- ARGV[8]  the events' time (unix seconds: when the API accepted their batch)
-- ARGV[9]  the half-life h of the decayed counters (seconds; 0: none kept)
-- ARGV[10..9+4M] per marker (M = #KEYS - 3 - 2E, in the order of KEYS[4+2E..]): its request
--          id, the index e of its slate's experiment (0: none), the variant, the member's
--          statistics bucket
-- ARGV[10+4M..] per event: the index of its request's marker (1-based), the post
-- Returns per event 0 (already counted), 1 (counted) or 2 (a click that also counted its
-- missing impression). An impression also counts in the forum's windowed `_wi` when it is
-- among its post's first W, and then leaves the marker `w:<post>`, so that the click of that
-- impression, and only it, counts in `_wc`. An event of an experiment's slate counts in the
-- same step under its variant `V|` and under `*|` (the same fields as the forum's, windowed
-- when it counted in `_wi`/`_wc`), and in its variant and bucket's results `V|B|i`/`V|B|c`.
-- Each event that counts, and only it, is appended to the outcome stream in this same step:
-- a duplicate appends nothing, and no crash can count an event without its outcome.
-- With h > 0 every count an event adds is also added, at the events' time, to its decayed
-- counter beside it (decayed.lua): the post's, the forum's, and the variants' in vstats; a
-- duplicate, which counts nothing, neither adds to them nor decays them.
-- Built by core.storage.counting.apply_events_call.
-- include: note_changes
-- include: decayed
local stats, changes, outcomes = KEYS[1], KEYS[2], KEYS[3]
local kind, ttl, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local cap, experiments, arm_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local at, half_life = tonumber(ARGV[8]), tonumber(ARGV[9])
local first_arg = 10
local first_marker = 3 + 2 * experiments
local markers = #KEYS - first_marker
local touched = {}

local function bump(key, fields)
  for _, field in ipairs(fields) do
    redis.call('HINCRBY', key, field, 1)
  end
  if not touched[key] then
    touched[key] = true
    redis.call('EXPIRE', key, arm_ttl)
  end
end

-- Count the event under its slate's variant, when an experiment served the slate.
local function count_arm(marker, kind, post, windowed)
  local base = first_arg + 4 * (marker - 1)
  local e = tonumber(ARGV[base + 1])
  if e == 0 then
    return
  end
  local vstats, results = KEYS[2 + 2 * e], KEYS[3 + 2 * e]
  local fields = {}
  for _, v in ipairs({ARGV[base + 2], '*'}) do
    fields[#fields + 1] = v .. '|' .. kind .. ':' .. post
    fields[#fields + 1] = v .. '|_' .. kind
    if windowed then
      fields[#fields + 1] = v .. '|_w' .. kind
    end
  end
  bump(vstats, fields)
  if half_life > 0 then
    for _, v in ipairs({ARGV[base + 2], '*'}) do
      decayed_add(vstats, v .. '|', post, kind, windowed, at, half_life)
    end
  end
  bump(results, {ARGV[base + 2] .. '|' .. ARGV[base + 3] .. '|' .. kind})
end

-- The forum's totals this step adds to, written once at its end (one HINCRBY a field rather
-- than one an event).
local totals = {_i = 0, _wi = 0, _c = 0, _wc = 0}

local function count_impression(stats, seen, post, window)
  local n = redis.call('HINCRBY', stats, 'i:' .. post, 1)
  totals._i = totals._i + 1
  local windowed = n <= window
  if windowed then
    totals._wi = totals._wi + 1
    redis.call('SADD', seen, 'w:' .. post)
  end
  if half_life > 0 then
    decayed_add(stats, '', post, 'i', windowed, at, half_life)
  end
  return windowed
end

local results, changed, marked = {}, {}, {}
for i = first_arg + 4 * markers, #ARGV, 2 do
  local marker = tonumber(ARGV[i])
  local seen, post = KEYS[first_marker + marker], ARGV[i + 1]
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
      count_arm(marker, 'i', post, windowed)
    elseif redis.call('SADD', seen, 'i:' .. post) == 1 then
      windowed = count_impression(stats, seen, post, window)
      count_arm(marker, 'i', post, windowed)
      applied = 2
    else
      windowed = window > 0 and redis.call('SISMEMBER', seen, 'w:' .. post) == 1
    end
    if kind == 'c' then
      redis.call('HINCRBY', stats, 'c:' .. post, 1)
      totals._c = totals._c + 1
      if windowed then
        totals._wc = totals._wc + 1
      end
      if half_life > 0 then
        decayed_add(stats, '', post, 'c', windowed, at, half_life)
      end
      count_arm(marker, 'c', post, windowed)
    end
    changed[#changed + 1] = post
    if cap > 0 then
      redis.call('XADD', outcomes, 'MAXLEN', '~', cap, '*',
                 'r', ARGV[first_arg + 4 * (marker - 1)], 'p', post, 'k', kind)
    end
  end
  results[#results + 1] = applied
end
for _, field in ipairs({'_i', '_wi', '_c', '_wc'}) do
  if totals[field] > 0 then
    redis.call('HINCRBY', stats, field, totals[field])
  end
end
if #changed > 0 then
  note_changes(changes, changed, tonumber(ARGV[3]))
end
return results
