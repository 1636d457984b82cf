"""svc's benchmarks: each script prints a table and writes it into BENCHMARKS.md."""
