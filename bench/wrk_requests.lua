-- wrk script for bench/http.py: every request is the next line of a prepared file.
--
--   wrk ... -s bench/wrk_requests.lua URL -- FILE THREADS cycle|once
--
-- A line is a path (GET) or a path, a tab and a urlencoded body (POST). wrk's threads each take
-- every THREADS-th line, so no line is sent twice. "cycle" starts a thread's share again when it
-- is used up (pages); "once" never sends a line twice (redemptions): past the end it asks for
-- /bench-ran-out-of-requests, which answers 404, and counts the request as "exhausted".
-- done() prints one line, "BENCH-JSON {...}", with the figures bench/http.py reads.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, thread_count = args[1], tonumber(args[2])
  cycle = args[3] == "cycle"
  lines = {}
  local index = 0
  for line in io.lines(file) do
    if index % thread_count == id then
      table.insert(lines, line)
    end
    index = index + 1
  end
  position, sent, exhausted = 1, 0, 0
end

function request()
  if position > #lines then
    if not cycle then
      exhausted = exhausted + 1
      return wrk.format("GET", "/bench-ran-out-of-requests")
    end
    position = 1
  end
  local line = lines[position]
  position = position + 1
  sent = sent + 1
  local tab = line:find("\t", 1, true)
  if tab then
    return wrk.format("POST", line:sub(1, tab - 1), nil, line:sub(tab + 1))
  end
  return wrk.format("GET", line)
end

function done(summary, latency, requests)
  local sent_total, exhausted_total = 0, 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    exhausted_total = exhausted_total + thread:get("exhausted")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"non_2xx_3xx": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"sent": %d, "exhausted": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    errors.status, errors.connect, errors.read, errors.write, errors.timeout, sent_total, exhausted_total))
end
