"""The benchmark's scenarios, one module per group: S1 order creation, S2 relay, S3 end to
end, S4/S5 workers. Each takes the Bench and stores its figures in bench.results."""
