"""The layering in DESIGN.md holds: client and server meet only in the wire format.

    cli/  ->  dispatch/ (client)      server/ + modal_functions/ (hosts)
                   \\                       /
                    protocol/ (the wire format)
                             |
                         engines/
                             |
        leaf modules: config, errors, timeline, words, records, retry, net, ...

Checked on the source (every ``import``, including those inside functions and under
TYPE_CHECKING), so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "canvascast_cli"
LEAVES = ("config", "errors", "timeline", "words", "records", "retry", "net", "atomic",
          "signals", "env", "paths")

# (folder or module, imports it must never make, why)
RULES: list[tuple[str, str, str]] = [
    ("canvascast_cli/dispatch", r"canvascast_cli\.(server|cli)\b", "the client never imports "
     "the server or the CLI"),
    ("canvascast_cli/server", r"canvascast_cli\.(dispatch|cli)\b", "the server never imports "
     "the client or the CLI"),
    ("modal_functions", r"canvascast_cli\.(dispatch|cli)\b", "the Modal app is a host: it "
     "never imports the client or the CLI"),
    ("canvascast_cli/protocol", r"canvascast_cli\.(dispatch|server|cli)\b", "the wire format "
     "belongs to neither side"),
    ("canvascast_cli/ops", r"canvascast_cli\.(server|cli)\b", "operations sit beside the "
     "client: never the server or the CLI"),
    ("canvascast_cli/ops/fleet.py", r"canvascast_cli\.(dispatch|server|cli|engines)\b",
     "the Modal app's reconciler uses the fleet: it stays off the client's layers"),
    ("canvascast_cli/ops/windows.py", r"canvascast_cli\.(dispatch|server|cli|engines)\b",
     "the Modal app's reconciler uses the windows: they stay off the client's layers"),
    ("modal_functions", r"canvascast_cli\.ops\.(?!fleet\b|windows\b)", "the Modal app uses "
     "only the fleet and the windows of the operators' half"),
    ("canvascast_cli/cache", r"canvascast_cli\.(dispatch|server|cli)\b", "the result caches' "
     "keys are shared by the client and the hosts: they import neither side"),
    ("canvascast_cli/engines", r"canvascast_cli\.(cli|dispatch|server|protocol)\b", "engines "
     "are the work itself, the same everywhere"),
    ("canvascast_cli/storage", r"canvascast_cli\.(?!(config|errors|net|retry|records|env|"
     r"paths|atomic|protocol|storage)\b)", "the artifact store stands on the leaf modules "
     "and protocol's sha256 helpers: never the CLI, dispatch, server, engines or ops"),
    *[(f"canvascast_cli/{leaf}.py",
       r"canvascast_cli\.(cli|dispatch|server|protocol|engines)\b",
       "a leaf module imports no layer above it") for leaf in LEAVES],
]


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def files(where: str) -> list[Path]:
    target = REPO / where
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize(("where", "banned", "why"), RULES, ids=[r[0] for r in RULES])
def test_layers(where: str, banned: str, why: str) -> None:
    crossings = [f"{path.relative_to(REPO)}:{line} imports {module}"
                 for path in files(where) for line, module in imports(path)
                 if re.match(banned, module)]
    assert files(where), f"{where} has no Python files: the rule checks nothing"
    assert not crossings, f"{why}:\n" + "\n".join(crossings)


def test_every_module_is_under_some_rule() -> None:
    """A new top-level module or package gets a rule (or is a known leaf/the CLI)."""
    covered = {Path(r[0]).name.removesuffix(".py") for r in RULES} | {"cli", "assets"}
    tops = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
            and p.name not in ("__init__.py", "__main__.py")}
    assert tops <= covered, f"no layering rule for {sorted(tops - covered)}"
