-- Shared helper, included by the loader (core/storage/scripts.py) in the scripts that declare
-- "-- include: decayed".
-- decayed_add(key, prefix, post, kind, windowed, at, h): add one event of `kind` ('i'/'c') of
-- `post` at time `at` (unix seconds) to the decayed counters under `prefix` ('' in a forum's
-- stats hash, 'V|' in an experiment's vstats hash): the post's `di:`/`dc:` with their time
-- `dt:`, and the forum's `_di`/`_dc` (and `_dwi`/`_dwc` when `windowed`) with their time `_dt`.
-- Each group shares one time: every value of the group is decayed to it whenever one of them
-- changes, `value * 2 ^ (-(to - last) / h)` with `to = max(last, at)`, and the increment is
-- added with the weight it has at `to` (an event older than the last update, 2 ^ (-(last -
-- at) / h)), so the group holds sum_i 2 ^ (-(to - t_i) / h) whatever the order of its events.
-- Values are written with 17 significant digits, which a double reads back unchanged.
local function decayed_group(key, time_field, fields, adds, at, h)
  local got = redis.call('HMGET', key, time_field, unpack(fields))
  local last = tonumber(got[1]) or at
  local to = math.max(last, at)
  local keep, weight = 2 ^ (-(to - last) / h), 2 ^ (-(to - at) / h)
  local out = {time_field, string.format('%.17g', to)}
  for i, field in ipairs(fields) do
    local value = (tonumber(got[i + 1]) or 0) * keep + (adds[i] or 0) * weight
    out[#out + 1] = field
    out[#out + 1] = string.format('%.17g', value)
  end
  redis.call('HSET', key, unpack(out))
end

local function decayed_add(key, prefix, post, kind, windowed, at, h)
  local click = kind == 'c' and 1 or 0
  decayed_group(key, prefix .. 'dt:' .. post, {prefix .. 'di:' .. post, prefix .. 'dc:' .. post},
                {1 - click, click}, at, h)
  local wi, wc = 0, 0
  if windowed then
    wi, wc = 1 - click, click
  end
  decayed_group(key, prefix .. '_dt',
                {prefix .. '_di', prefix .. '_dc', prefix .. '_dwi', prefix .. '_dwc'},
                {1 - click, click, wi, wc}, at, h)
end
