"""Benchmarks for status-service: run them all with `bash bench/run.sh` (see docs/benchmarks.md)."""
