"""Every message, help text and doc names only commands and options that exist.

The Typer app is walked for its real commands and options; then every ``canvascast ...``
a user is told to run — in code spans of messages, docstrings and help texts
(``canvascast_cli``, ``modal_functions``), and in README.md and docs/ (code spans and
shell blocks) — must name a command that exists, with options that command has, and
every ``--option`` a message mentions must exist somewhere.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer

from canvascast_cli.cli.app import app
from tests.helpers import REPO

# Options of other tools that messages quote (pip, ffmpeg, Modal's CLI).
OTHER_TOOLS = {"--force-reinstall", "--upgrade", "--extra", "--no-deps", "--index-url",
               "--name", "--env", "--tag"}


def command_tree() -> dict[str, set[str]]:
    """'' (the root), 'render', 'jobs wait', ... -> that command's option names."""
    root = typer.main.get_command(app)
    tree: dict[str, set[str]] = {}

    def walk(command: Any, path: str) -> None:
        options = {opt for param in command.params for opt in
                   (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ()))
                   if opt.startswith("-")}
        tree[path] = options | {"--help", "-h"}
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(root, "")
    return tree


TREE = command_tree()
ALL_OPTIONS = set().union(*TREE.values())


def texts() -> Iterator[tuple[str, str, bool]]:
    """(where, text, is a line of a shell block) for every string a user can read."""
    for folder in ("canvascast_cli", "modal_functions"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    yield f"{path.relative_to(REPO)}:{node.lineno}", node.value, False
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        in_block = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            yield f"{path.relative_to(REPO)}:{number}", line, in_block


def invocations(text: str, shell: bool) -> Iterator[str]:
    """The ``canvascast ...`` commands quoted in ``text``: in `code` or ``code`` spans,
    and lines of a shell block (``canvascast ...``, ``$ canvascast ...``, after ``&&``)."""
    if shell:
        for part in re.split(r"&&|;|\|", text):
            part = part.strip().removeprefix("$ ")
            if part.startswith("canvascast "):
                yield part.split(" #", 1)[0]
        return
    for match in re.finditer(r"`{1,2}(canvascast [^`]+)`{1,2}", text):
        yield match.group(1)


def check(invocation: str) -> str | None:
    """What is wrong with a quoted command line, or None."""
    words = invocation.split()[1:]
    path: list[str] = []
    for word in words:
        candidate = " ".join([*path, word])
        if candidate in TREE:
            path.append(word)
        elif word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        elif not path or (TREE.get(" ".join(path)) is not None and any(
                key.startswith(" ".join(path) + " ") for key in TREE)):
            return f"no command `canvascast {candidate}`"
        else:
            break  # an argument (a file name, an id)
    if not path:
        if not words or words[0].startswith("-"):
            path = []
        else:
            return f"no command `canvascast {words[0]}`"
    known = TREE[" ".join(path)] | TREE[""]
    for word in words:
        option = word.split("=", 1)[0]
        if option.startswith("--") and re.fullmatch(r"--[a-z][a-z0-9-]*", option) \
                and option not in known:
            return f"`canvascast {' '.join(path)}` has no option {option}"
    return None


def test_the_walk_finds_the_commands() -> None:
    assert {"render", "transcribe", "images", "serve", "jobs wait", "config validate",
            "models list", "deploy", "warm status", "warm set", "warm reset", "warm ping",
            "warm schedule", "status", "breaker reset"} <= set(TREE)
    assert "--frames" in TREE["render"] and "--json" in TREE[""]


@pytest.mark.parametrize("bad", ["canvascast undeploy", "canvascast jobs list",
                                 "canvascast warm unset", "canvascast deploy --force",
                                 "canvascast render x.json --bogus"])
def test_the_check_catches_what_does_not_exist(bad: str) -> None:
    assert check(bad) is not None


def test_every_quoted_command_exists() -> None:
    problems = [f"{where}: {problem} (in {invocation!r})"
                for where, text, shell in texts() for invocation in invocations(text, shell)
                if (problem := check(invocation)) is not None]
    assert not problems, "\n".join(problems)


def test_every_option_mentioned_exists() -> None:
    problems = []
    for where, text, _shell in texts():
        if where.startswith(("README", "docs")):
            continue  # docs quote other tools' command lines (pip, modal, ffmpeg)
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
            if option not in ALL_OPTIONS and option not in OTHER_TOOLS:
                problems.append(f"{where}: {option}")
    assert not problems, "no such option:\n" + "\n".join(problems)
