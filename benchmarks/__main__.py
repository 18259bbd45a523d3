"""``python -m benchmarks [--quick] [--only fleet,poll,window,growth]``: one JSON document."""

from .run_all import main

main()
