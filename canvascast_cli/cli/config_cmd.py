"""``canvascast config``: check and show the compute config (modal.toml)."""

from __future__ import annotations

import json
from typing import Any

import typer

from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import JsonFlag
from canvascast_cli.cli.output import reporting

app = typer.Typer(
    help="Check and show the compute config (modal.toml; Modal itself never reads it).",
    no_args_is_help=True,
)

@app.command("validate")
def validate(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Validate modal.toml and CANVASCAST_* overrides; every problem is listed (exit 2)."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        config = application.config()
        where = str(config.path) if config.path else "defaults (no modal.toml found)"
        out.data({"valid": True, "path": str(config.path) if config.path else None},
                 text=f"ok: {where}")


@app.command("show")
def show(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Show every effective value and where it came from: flag, env, file or default."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        config = application.config()
        rows = config.rows()
        if out.json:
            out.data({
                "path": str(config.path) if config.path else None,
                "values": {key: {"value": value, "source": source}
                           for key, value, source in rows},
            })
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"config: {config.path or 'defaults (no modal.toml found)'}")
        table.add_column("key")
        table.add_column("value")
        table.add_column("source")
        for key, value, source in rows:
            table.add_row(key, _show(value), source)
        Console(no_color=not out.color, soft_wrap=True).print(table)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)
