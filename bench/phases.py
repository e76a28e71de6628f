"""The controller at every phase of its schedule and every second of a period the capacity halves at.

    python -m bench.phases [--step-sec 5]

Prints, for the default controller (`adaptive_aimd`), the periods it takes to reconverge after the
capacity halves (as `lab.run` measures it) for each phase (rows) and change second (columns), then
the worst; writes `bench/results/phases.json`. Virtual time: the figures do not depend on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from lab.phases import sweep, worst
from lab.strategies import strategy

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-sec", type=float, default=5.0, help="between phases and change seconds (default 5)")
    parser.add_argument("--strategy", default="adaptive_aimd")
    args = parser.parse_args(argv)
    seconds = [k * args.step_sec for k in range(int(60 / args.step_sec))]
    results = sweep(strategy(args.strategy), seconds, seconds)
    print(f"{args.strategy}: periods to reconverge after the capacity halves (rows: the schedule's second of the"
          " minute; columns: the second of its period the capacity halves at)")
    print("phase | " + " | ".join(f":{c:02.0f}" for c in seconds))
    for phase in seconds:
        row = [r for r in results if r.phase_sec == phase]
        print(f":{phase:02.0f}   | " + " | ".join("never" if r.reconverge_periods is None
                                                   else f"{r.reconverge_periods:.2f}" for r in row))
    bad = worst(results)
    print(f"worst: {bad.reconverge_periods} periods (phase :{bad.phase_sec:02.0f}, change at :{bad.change_second:02.0f});"
          f" {len(results)} combinations")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "phases.json").write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
