"""Option types shared by commands (declared once, used everywhere)."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from canvascast_cli import env


class BackendName(enum.StrEnum):
    auto = "auto"
    local = "local"
    http = "http"
    modal = "modal"


JsonFlag = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document on stdout (result or error).")]
OverwriteFlag = Annotated[bool, typer.Option("--overwrite", help="Replace existing output.")]
LocalFlag = Annotated[bool, typer.Option(
    "--local", help="Run on this machine; never touch the network (same as --backend local).")]
RemoteFlag = Annotated[bool, typer.Option(
    "--remote", help="Never fall back to this machine: exit 3 when the remote backend is "
    "unavailable, 4 when its circuit is open.")]
BackendOption = Annotated[BackendName, typer.Option(
    "--backend", envvar=env.BACKEND, show_envvar=True, case_sensitive=False,
    help="Where the job runs: auto (http when MODAL_ENDPOINT is set, modal when a Modal "
    "token is configured, else local), local, http (the job API), modal (Modal's SDK).")]
