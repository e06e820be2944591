-- wrk script: optional varying member ids, and one JSON line of results at the end.
-- Arguments: [path prefix to which a member id is appended, e.g. "/v1/recommendations?n=10&user_id=m"]
local prefix = nil
local counter = 0

function init(args)
  prefix = args[1]
  counter = math.random(1, 1000000)
end

function request()
  if prefix == nil then
    return wrk.format(nil)
  end
  counter = counter + 1
  return wrk.format("GET", prefix .. (counter % 10000))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non2xx": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
