"""Benchmark: validate a generated 64-node cluster.toml in-process.

Prints a table and writes bench/results/config_validate.json. Target (not a test assertion): median ≤ 200 ms.
Baseline in the same run: tomllib.loads of the same text (the parse alone), so a slow machine shows as slow in both.

Run from the repository root:
    .venv/bin/python -m bench.config_validate [--nodes 64] [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tomllib

from bench import report
from pvc.config.example import Plan, render
from pvc.config.load import load_text

TARGET_MS = 200.0


def measure(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", default=report.default_out("config_validate"))
    args = parser.parse_args()

    text = render(Plan(nodes=args.nodes, lab=False), "ab" * 32, name="bench")
    first = load_text(text, "bench.toml")
    assert first.valid, [p.format("bench.toml") for p in first.errors]
    validate = measure(lambda: load_text(text, "bench.toml"), args.repeat)
    parse = measure(lambda: tomllib.loads(text), args.repeat)
    rows = [
        ("pvc config validate (in-process)", statistics.median(validate), max(validate)),
        ("baseline: tomllib.loads only", statistics.median(parse), max(parse)),
    ]
    print(
        f"cluster.toml with {args.nodes} nodes, {len(text.splitlines())} lines, {len(text)} bytes; {args.repeat} runs"
    )
    print(report.table(["what", "median ms", "max ms"], [(n, f"{m:.2f}", f"{w:.2f}") for n, m, w in rows]))
    median = rows[0][1]
    verdict = "meets" if median <= TARGET_MS else "MISSES"
    print(
        f"target: median ≤ {TARGET_MS:.0f} ms → {verdict} ({median:.1f} ms, {median / rows[1][1]:.1f}× the parse alone)"
    )
    result = {
        "benchmark": "config_validate",
        "nodes": args.nodes,
        "lines": len(text.splitlines()),
        "repeat": args.repeat,
        "validate_median_ms": round(median, 3),
        "validate_max_ms": round(rows[0][2], 3),
        "parse_median_ms": round(rows[1][1], 3),
        "target_ms": TARGET_MS,
        "meets_target": median <= TARGET_MS,
    }
    report.write(result, args.out)


if __name__ == "__main__":
    main()
