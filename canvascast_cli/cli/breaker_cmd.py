"""``canvascast breaker``: the circuit breakers every canvascast process shares.

``canvascast status`` shows them; ``breaker reset`` is the operator's override, for when
the service is known to be back before the breaker's own trial would find out. Each
reset is written to the operators' log in the state file.
"""

from __future__ import annotations

from typing import Annotated

import typer

from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import JsonFlag
from canvascast_cli.cli.output import reporting
from canvascast_cli.errors import InvalidInput

app = typer.Typer(
    help="The circuit breakers shared by every canvascast process on this machine (one "
    "per backend and function; `canvascast status` shows them).", no_args_is_help=True)

BACKENDS = ("modal", "http")


@app.command("reset", short_help="Close breakers and forget their failures (logged).")
def reset(
    ctx: typer.Context,
    function: Annotated[str | None, typer.Argument(
        metavar="[FUNCTION]", help="render_video, transcribe_audio or generate_images "
        "(default: every function).")] = None,
    backend: Annotated[str | None, typer.Option(
        "--backend", metavar="NAME", help="Only this backend's breakers: modal or http "
        "(default: both).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Close the breakers of FUNCTION (every function when not given) and forget their
    failure counts; the next call goes through. Recorded in the state file's log."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.cli.ops_common import state_db
        from canvascast_cli.dispatch.breaker import CircuitState, SQLiteStorage
        from canvascast_cli.ops.overrides import Events, actor
        from canvascast_cli.protocol import FUNCTIONS

        if function is not None and function not in FUNCTIONS:
            raise InvalidInput(f"FUNCTION: {function!r}; allowed: {', '.join(FUNCTIONS)}")
        if backend is not None and backend not in BACKENDS:
            raise InvalidInput(f"--backend: {backend!r}; allowed: {', '.join(BACKENDS)}")
        db = state_db()
        storage = SQLiteStorage(db)
        events = Events(db, clock=application.services.clock)
        who = actor()
        reset_keys = []
        for key, record in storage.all().items():
            key_backend, _, key_function = key.partition(":")
            if (function is not None and key_function != function) or (
                    backend is not None and key_backend != backend):
                continue
            storage.delete(key)
            was = record.state.value + (f", {record.failures} failures"
                                        if record.failures else "")
            events.record("breaker_reset", key, f"was {was}", by=who)
            reset_keys.append({"key": key, "was": record.state.value,
                               "failures": record.failures,
                               "open": record.state is not CircuitState.CLOSED})
        scope = " ".join(filter(None, [backend, function])) or "any function"
        if reset_keys:
            for item in reset_keys:
                out.note(f"[green]Reset[/green] {item['key']} (was {item['was']}, "
                         f"{item['failures']} failures)")
        else:
            out.note(f"No breaker state for {scope}: every circuit is closed already")
        out.data({"reset": reset_keys}, text=None)
