"""Remote benchmark: the HTTP backend against `canvascast serve` on loopback, side by side.

    python bench/remote_bench.py               # demo render local vs http, 3 rounds
    python bench/remote_bench.py --repeat 5 --small-jobs 20

In one run, with one `canvascast serve --workers 1` started here (and warmed with one job,
as a warm Modal container would be):

- **render ratio**: wall time of the demo render (`examples/demo/timeline.json`, 1080p30,
  31 s) through the http backend over the same render with ``--local``, both as a user
  runs them (``python -m canvascast_cli render ...``), interleaved local, http, local,
  http ...; medians. Target <= 1.10 once the inputs are uploaded (the first http render,
  which uploads them, is reported apart). Both sides encode on the same two cores, so
  the ratio is what the remote path itself costs.
- **bytes uploaded** by a second render of the same timeline (target 0): from ``--json``.
- **client overhead per job**: a tiny render (320x180, 10 frames) submitted through the
  dispatcher in this process, many times: wall time of submit + poll + download minus
  the seconds the server reports spending on the job itself (``billed_seconds``); the
  median (target <= 100 ms).

Machine noise hits both sides alike; compare ratios, not absolute seconds. No assertions:
this prints a table (and ``--json`` a document).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEMO = REPO / "examples" / "demo" / "timeline.json"
TOKEN = "bench-" + os.urandom(8).hex()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = {**os.environ, "MODAL_TOKEN": TOKEN, "CANVASCAST_HOME": str(root / "server-home")}
    proc = subprocess.Popen([sys.executable, "-m", "canvascast_cli", "serve", "--port",
                             str(port), "--workers", "1", "--store", str(root / "store")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("canvascast serve did not start")


def cli(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "canvascast_cli", "--json", *args],
                          capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"canvascast {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed, json.loads(done.stdout)


def small_job_overheads(url: str, folder: Path, count: int) -> list[float]:
    from PIL import Image

    from canvascast_cli.config import load_config
    from canvascast_cli.dispatch.backend import Choice
    from canvascast_cli.dispatch.dispatcher import Dispatcher
    from canvascast_cli.dispatch.http import HttpBackend
    from canvascast_cli.dispatch.remote_jobs import render_remote
    from canvascast_cli.dispatch.state import StateDB
    from canvascast_cli.engines.render.engine import RenderOptions
    from canvascast_cli.engines.render.job import RenderJob
    from canvascast_cli.timeline import parse_timeline

    Image.new("RGB", (320, 180), (40, 90, 160)).save(folder / "still.jpg")
    timeline = parse_timeline({"output": {"width": 320, "height": 180, "fps": 10},
                               "scenes": [{"image": "still.jpg", "duration": 1,
                                           "motion": "zoom_in"}]})
    settings = load_config(search=False, env={}).settings
    dispatcher = Dispatcher(settings=settings,
                            choice=Choice("http", "bench", endpoint=url, token=TOKEN),
                            make_backend=lambda _choice, retry: HttpBackend(url, TOKEN,
                                                                            retry=retry),
                            remote_only=True, state=StateDB(folder / "state.sqlite3"))
    overheads = []
    for i in range(count + 1):
        job = RenderJob(timeline=timeline, base_dir=folder, output=folder / f"s{i}.mp4",
                        options=RenderOptions(), overwrite=True)
        remote, fetch = render_remote(job)
        began = time.perf_counter()
        outcome = dispatcher.run(remote, local=lambda: None, fetch=fetch)
        wall = time.perf_counter() - began
        if i:  # the first one uploads the still
            overheads.append(wall - (outcome.billed_seconds or 0.0))
    return overheads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--small-jobs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="canvascast-remote-bench-") as tmp:
        root = Path(tmp)
        proc, url = start_server(root)
        try:
            env = {**os.environ, "MODAL_ENDPOINT": url, "MODAL_TOKEN": TOKEN,
                   "CANVASCAST_HOME": str(root / "client-home")}
            # Warm the worker (imports, first ffmpeg) as a warm container would be.
            # It uploads the demo's inputs (all of them: a frame range still names them).
            warm_s, warm = cli(["render", str(DEMO), "-o", str(root / "warm.mp4"), "--frames",
                                "0:10", "--backend", "http", "--remote"], env)
            first_s, first = cli(["render", str(DEMO), "-o", str(root / "first.mp4"),
                                  "--backend", "http", "--remote"], env)
            local_s, remote_s, uploads = [], [], []
            for i in range(args.repeat):
                seconds, _doc = cli(["render", str(DEMO), "-o", str(root / f"l{i}.mp4"),
                                     "--local"], env)
                local_s.append(seconds)
                seconds, doc = cli(["render", str(DEMO), "-o", str(root / f"h{i}.mp4"),
                                    "--backend", "http", "--remote"], env)
                remote_s.append(seconds)
                uploads.append(doc["bytes_up"])
            overheads = small_job_overheads(url, root, args.small_jobs)
        finally:
            proc.terminate()
            proc.wait(10)

    report = {
        "warm_up_upload": {"seconds": warm_s, "bytes_up": warm["bytes_up"]},
        "first_full_http_render": {"seconds": first_s, "bytes_up": first["bytes_up"]},
        "local_seconds": local_s, "http_seconds": remote_s,
        "ratio_http_over_local": statistics.median(remote_s) / statistics.median(local_s),
        "ratios_per_round": [h / ll for h, ll in zip(remote_s, local_s, strict=True)],
        "bytes_up_repeat_renders": uploads,
        "small_job_overhead_ms": {"median": 1000 * statistics.median(overheads),
                                  "p90": 1000 * sorted(overheads)[int(0.9 * len(overheads))],
                                  "n": len(overheads)},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"warm-up (10 frames, uploads the inputs): {warm_s:.1f} s, "
          f"{warm['bytes_up'] / 1e6:.1f} MB up; first full http render {first_s:.1f} s, "
          f"{first['bytes_up']} bytes up")
    print(f"demo render, {args.repeat} rounds: local {statistics.median(local_s):.1f} s, "
          f"http {statistics.median(remote_s):.1f} s -> ratio "
          f"{report['ratio_http_over_local']:.3f} (per round: "
          + ", ".join(f"{r:.3f}" for r in report["ratios_per_round"]) + ")")
    print(f"bytes uploaded by repeat renders: {uploads}")
    small = report["small_job_overhead_ms"]
    print(f"client overhead per small job: median {small['median']:.0f} ms, p90 "
          f"{small['p90']:.0f} ms over {small['n']} jobs")


if __name__ == "__main__":
    main()
