"""What the caption glyph check costs (``engines/render/fonts/``), in milliseconds.

    python bench/glyphs_bench.py             # each case in a fresh process, 3 runs each

Cases: the demo's captions; 10,000 English words (the bundled font has them all);
10,000 Japanese words (installed fonts are listed: by fontconfig, or, without it, from
the font folders, with the cache cold and warm); 10,000 words of which 10% have
characters no font has (the messages). Each run is a fresh interpreter, so the figures
include importing fontTools and reading the bundled font, as a ``canvascast render``
pays them. No timed assertions: this prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"

CHILD = r"""
import json, random, sys, time
t0 = time.perf_counter()
from canvascast_cli.engines.render.fonts import discovery
from canvascast_cli.engines.render.fonts.messages import missing_problems
from canvascast_cli.engines.render.fonts.plan import plan_fonts
case, demo = sys.argv[1], sys.argv[2]
if case == "demo":
    texts = [w["word"] for w in json.load(open(demo + "/words.json"))["words"]]
else:
    rng = random.Random(1)
    latin = "the quick brown fox jumps over a lazy dog while café crowds cheer".split()
    kana = [chr(c) for c in range(0x3042, 0x3094)] + [chr(c) for c in range(0x4E00, 0x4F00)]
    if case == "english":
        texts = [rng.choice(latin) for _ in range(10_000)]
    elif case.startswith("japanese"):
        texts = ["".join(rng.choices(kana, k=3)) for _ in range(10_000)]
    else:  # "missing": a tenth have a private-use character no font has
        texts = [rng.choice(latin) + ("\ue000" if i % 10 == 0 else "") for i in range(10_000)]
    if case == "japanese-nofc":
        discovery.fc_match_exe = lambda: None
t1 = time.perf_counter()
plan, problems = plan_fonts(texts, ["DejaVu Sans"], __import__("pathlib").Path("."))
messages = missing_problems(plan, texts, "captions.words") if plan.missing else []
for text in dict.fromkeys(texts):
    plan.runs(text)
t2 = time.perf_counter()
print(json.dumps({"check_ms": (t2 - t1) * 1000, "with_import_ms": (t2 - t0) * 1000,
                  "words": len(texts), "faces": len(plan.faces), "missing": len(plan.missing),
                  "installed": plan.installed.source}))
"""


def run(case: str, cache: Path) -> dict[str, float]:
    env = {**os.environ, "CANVASCAST_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-c", CHILD, case, str(DEMO)], env=env,
                          capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'case':<28} {'check ms':>9} {'+import ms':>11}  notes")
    for case in ("demo", "english", "japanese", "japanese-nofc", "missing"):
        with tempfile.TemporaryDirectory() as home:
            runs = [run(case, Path(home)) for _ in range(args.repeat)]
        first, rest = runs[0], runs[1:] or runs
        check = statistics.median(r["check_ms"] for r in rest)
        total = statistics.median(r["with_import_ms"] for r in rest)
        notes = (f"{first['words']} words, {first['faces']} faces, {first['missing']} "
                 f"missing, installed fonts: {first['installed'] or 'not read'}")
        if case == "japanese-nofc":
            notes += f"; cold cache {first['check_ms']:.0f} ms"
        print(f"{case:<28} {check:>9.1f} {total:>11.1f}  {notes}")


if __name__ == "__main__":
    main()
