"""Benchmarks: each prints a table and writes a JSON report under bench/results/. Run each as a module from the
repository root, e.g. `.venv/bin/python -m bench.cli_startup`, so it imports the test harness (tests/harness) as a
package."""
