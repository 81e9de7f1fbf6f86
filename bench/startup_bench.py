"""CLI start-up: `canvascast --help` against a bare `import typer, rich`, side by side.

    python bench/startup_bench.py [--rounds 20]

Each run is a fresh interpreter (process start to exit, as a user sees it). Every round
runs each command once, in a rotating order, and each command's time is divided by the
baseline's of the same round, so a machine whose speed drifts (other work on its cores)
still gives a fair ratio. Prints each command's median and minimum, the median ratio
(target for `canvascast --help`: <= 2.0), how many modules each loads, and the load
average before and after (a loaded machine slows the bigger command more: the ratio
rises with the load). PYTHONDONTWRITEBYTECODE is dropped for the runs, so that the
warm-up writes the bytecode a user's install has: without it every run would compile
canvascast's own modules again (typer and rich come compiled from pip either way).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

BASELINE = "import typer, rich"
COMMANDS = {
    BASELINE: [sys.executable, "-c", "import typer, rich"],
    "canvascast --help": [sys.executable, "-m", "canvascast_cli", "--help"],
    "canvascast render --help": [sys.executable, "-m", "canvascast_cli", "render", "--help"],
    "canvascast status --help": [sys.executable, "-m", "canvascast_cli", "status", "--help"],
    "canvascast breaker --help": [sys.executable, "-m", "canvascast_cli", "breaker", "--help"],
}
COUNT = ("import sys, io, contextlib; sys.argv = {argv!r}\n"
         "from canvascast_cli.cli.app import main\n"
         "with contextlib.redirect_stdout(io.StringIO()):\n"
         "    try:\n        main()\n    except SystemExit:\n        pass\n"
         "print(len(sys.modules))")
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "COLUMNS": "100"}


def wall(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env=ENV)
    return time.perf_counter() - began


def modules(command: list[str]) -> int:
    if command[1] == "-c":
        code = "import sys, typer, rich; print(len(sys.modules))"
    else:
        code = COUNT.format(argv=["canvascast", *command[3:]])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=ENV)
    return int(out.stdout.strip().splitlines()[-1])


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.rounds} rounds; load average (1/5/15 min) "
          f"before: {load()}")
    names = list(COMMANDS)
    for command in COMMANDS.values():  # warm the file cache
        wall(command)
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        took = {name: wall(COMMANDS[name]) for name in names[shift:] + names[:shift]}
        for name in names:
            times[name].append(took[name])
            ratios[name].append(took[name] / took[BASELINE])
    print(f"{'command':26} {'median ms':>9} {'min ms':>7} {'ratio':>6} {'min ratio':>9} "
          f"{'modules':>7}")
    for name in names:
        print(f"{name:26} {statistics.median(times[name]) * 1000:9.0f} "
              f"{min(times[name]) * 1000:7.0f} {statistics.median(ratios[name]):6.2f} "
              f"{min(ratios[name]):9.2f} {modules(COMMANDS[name]):7d}")
    print(f"load average after: {load()}; ratio = the command's time over `{BASELINE}`'s "
          "in the same round (median over rounds); target for `canvascast --help` <= 2.0")


if __name__ == "__main__":
    main()
