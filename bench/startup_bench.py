"""CLI start-up: `canvascast --help` against a bare `import typer, rich`, side by side.

    python bench/startup_bench.py [--runs 15]

Each run is a fresh interpreter (process start to exit, as a user sees it); the two
commands alternate (A B A B ...) and the ratio is taken pair by pair, so a machine whose
speed drifts during the run still gives a fair ratio. Prints the medians, the median
ratio (target <= 2.0), and how many modules each loads. Also `canvascast render --help`
and `canvascast status --help`, whose command modules are the largest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

BASELINE = [sys.executable, "-c", "import typer, rich"]
COMMANDS = {
    "canvascast --help": [sys.executable, "-m", "canvascast_cli", "--help"],
    "canvascast render --help": [sys.executable, "-m", "canvascast_cli", "render", "--help"],
    "canvascast status --help": [sys.executable, "-m", "canvascast_cli", "status", "--help"],
}
COUNT = ("import sys, io, contextlib; sys.argv = {argv!r}\n"
         "from canvascast_cli.cli.app import main\n"
         "with contextlib.redirect_stdout(io.StringIO()):\n"
         "    try:\n        main()\n    except SystemExit:\n        pass\n"
         "print(len(sys.modules))")


def wall(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env={**os.environ, "COLUMNS": "100"})
    return time.perf_counter() - began


def modules(argv: list[str] | None) -> int:
    code = (COUNT.format(argv=argv) if argv is not None
            else "import sys, typer, rich; print(len(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.runs} pairs each; load {os.getloadavg()[0]:.2f}")
    for command in (BASELINE, *COMMANDS.values()):  # warm the file cache
        wall(command)
    print(f"{'command':28} {'median ms':>10} {'baseline ms':>12} {'ratio':>7} {'modules':>8}")
    base_modules = modules(None)
    for name, command in COMMANDS.items():
        ours, theirs, ratios = [], [], []
        for _ in range(args.runs):
            a, b = wall(command), wall(BASELINE)
            ours.append(a)
            theirs.append(b)
            ratios.append(a / b)
        argv = ["canvascast", *command[3:]]
        print(f"{name:28} {statistics.median(ours) * 1000:10.0f} "
              f"{statistics.median(theirs) * 1000:12.0f} {statistics.median(ratios):7.2f} "
              f"{modules(argv):8d}")
    print(f"(baseline `import typer, rich`: {base_modules} modules; target ratio <= 2.0)")


if __name__ == "__main__":
    main()
