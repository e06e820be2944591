-- wrk script: POST each pre-built event batch of a file ("<path>\t<json body>" per line)
-- exactly once (wrk itself runs until its duration or SIGINT). Connections that find no batch
-- left ask for /healthz (answered 200), which carries no events. wrk calls request() once before connecting, to
-- inspect it: that call gets /healthz too, so no batch is skipped.
local batches = {}
local inspected = false
local handed_out = 0
local idle = nil

function init(args)
  for line in io.lines(args[1]) do
    local path, body = line:match("^(%S+)\t(.*)$")
    batches[#batches + 1] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
  end
  idle = wrk.format("GET", "/healthz")
end

function request()
  if not inspected or handed_out >= #batches then
    inspected = true
    return idle
  end
  handed_out = handed_out + 1
  return batches[handed_out]
end

-- Once every batch is out, the idle connections ask only every 50 ms, leaving the CPU to the
-- workers that drain the queue.
function delay()
  if handed_out >= #batches then
    return 50
  end
  return 0
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non2xx": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
