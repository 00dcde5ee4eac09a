"""``python -m simulations run [--quick] [--json] [--out DIR] [--seed N]``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from simulations.report import as_json, plot, print_tables
from simulations.run import FULL, QUICK, run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="every workload under every policy, reputation and scaling")
    run.add_argument("--quick", action="store_true", help="a small mesh and few tasks (under a minute)")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    run.add_argument("--out", type=Path, default=None, help="write PNG plots and results.json here")
    run.add_argument("--seed", type=int, default=None, help="seed (default 7)")
    args = parser.parse_args(argv)
    scenario = QUICK if args.quick else FULL
    if args.seed is not None:
        scenario = replace(scenario, seed=args.seed)
    results = run_all(scenario, mode="quick" if args.quick else "full")
    obj = as_json(results)
    if args.out is not None:
        plot(results, args.out)
        (args.out / "results.json").write_text(json.dumps(obj, indent=2) + "\n")
    if args.json:
        json.dump(obj, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_tables(results)
        if args.out is not None:
            print(f"plots and results.json in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
