-- wrk script: POST /api/orders (or BENCH_PATH) with the bench user's token; prints one JSON line of figures.
local token = os.getenv("BENCH_TOKEN")
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/api/orders"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Token " .. token
wrk.body = '{"lines": [{"sku": "MUG-RED", "quantity": 2, "unit_price": "9.99", "currency": "EUR"},' ..
           ' {"sku": "TEA-1", "quantity": 1, "unit_price": "4.50", "currency": "EUR"}]}'

done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration, non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000))
end
