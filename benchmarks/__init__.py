"""tempctl's benchmarks: ``python -m benchmarks`` prints one JSON document (see run_all.py)."""
