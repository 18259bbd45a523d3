"""Parsing cost of one poll's answer: ``python -m benchmarks.parse_bench`` prints one JSON.

Measures ``parse_info`` on the v2.15 Gamma reference body (what every poll of a current
device parses) and the JSON decode before it, as µs per body over many runs. This was an
"1000 bodies < 1 s" assertion in tests/test_axeos.py; a speed figure belongs here, not in a
test that runs on a loaded 2-core CI machine.
"""

from __future__ import annotations

import json
import statistics
import time


def run(bodies: int = 20_000, repeats: int = 5) -> dict:
    from tempctl.device import parse_info
    from tempctl.sim.firmware import BODIES_DIR

    raw = (BODIES_DIR / "v2.15.0_gamma-602_BM1370.json").read_bytes()
    info = json.loads(raw)
    parse_us, decode_us = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(bodies):
            parse_info(info, "d", 0)
        parse_us.append((time.perf_counter() - started) / bodies * 1e6)
        started = time.perf_counter()
        for _ in range(bodies):
            json.loads(raw.decode("utf-8"))
        decode_us.append((time.perf_counter() - started) / bodies * 1e6)
    return {
        "bench": "parse",
        "body": "v2.15.0_gamma-602_BM1370.json",
        "body_bytes": len(raw),
        "bodies_per_repeat": bodies,
        "parse_info_us_median": round(statistics.median(parse_us), 2),
        "json_decode_us_median": round(statistics.median(decode_us), 2),
        "target": "parse_info well under 1000 us (a poll loop parses one body every 1-5 s)",
        "met": statistics.median(parse_us) < 1000,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
