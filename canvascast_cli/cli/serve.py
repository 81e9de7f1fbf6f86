"""``canvascast serve``: the job API on this machine (the same app Modal hosts)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from canvascast_cli import env
from canvascast_cli.cli.context import get_app
from canvascast_cli.cli.output import reporting
from canvascast_cli.errors import EXIT_CODES_HELP, Interrupted, InvalidInput, JobFailed

LOOPBACK = ("127.0.0.1", "::1", "localhost")
SHUTDOWN_GRACE = 5  # seconds a stopping server gives requests in flight
SERVE_HELP = (
    "Run the job API locally with uvicorn; jobs run in worker processes. Clients use it "
    f"with {env.MODAL_ENDPOINT}=http://HOST:PORT and the same {env.MODAL_TOKEN} (one export "
    f"serves both ends of a dev loop).\n\n{EXIT_CODES_HELP}")


def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(
        help="Interface to listen on; anything but loopback needs --public.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free).")
                    ] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="Worker processes running jobs at once.")] = 1,
    store: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Blob store folder. \\[default: <cache>/server]")] = None,
    public: Annotated[bool, typer.Option(
        "--public", help="Allow a non-loopback --host (the token is then all that guards "
        "it; put TLS in front).")] = False,
    allow_private_urls: Annotated[bool, typer.Option(
        "--allow-private-urls", help="Let jobs fetch image URLs from loopback, private and "
        "link-local addresses (a dev loop on one machine). Off, the server fetches only "
        "from the public internet, so no client can make it reach its own network.")
    ] = False,
) -> None:
    application = get_app(ctx)
    out = application.out
    with reporting(out):
        token = os.environ.get(env.MODAL_TOKEN, "").strip()
        if not token:
            raise InvalidInput(f"serve: set {env.MODAL_TOKEN} to the bearer token clients "
                               "must send (e.g. export MODAL_TOKEN=$(openssl rand -hex 32))")
        if host not in LOOPBACK and not public:
            raise InvalidInput(f"--host {host}: not a loopback address; pass --public to "
                               "listen beyond this machine")
        try:
            import uvicorn
        except ImportError:
            raise InvalidInput("serve needs the modal extra: pip install "
                               "'canvascast[modal]'") from None
        from canvascast_cli.paths import cache_dir
        from canvascast_cli.server.app import create_app
        from canvascast_cli.server.blobs import BlobStore
        from canvascast_cli.server.limits import Janitor
        from canvascast_cli.server.runner import LocalRunner

        settings = application.config().settings
        _check_port(host, port)
        root = (store or cache_dir() / "server").expanduser().absolute()
        blobs = BlobStore(root)
        runner = LocalRunner(root, workers=workers, private_urls=allow_private_urls)
        janitor = Janitor.from_settings(blobs, runner.live_blobs, settings, note=out.note)
        try:
            # A stop waits this long for requests in flight (a stalled upload would
            # otherwise keep the server from ever stopping).
            config = uvicorn.Config(create_app(blobs, runner, token, janitor=janitor),
                                    host=host, port=port, log_level="warning",
                                    access_log=False,
                                    timeout_graceful_shutdown=SHUTDOWN_GRACE)
            server = uvicorn.Server(config)
            out.note(f"canvascast job API on http://{host}:{port} ({workers} worker"
                     f"{'s' if workers > 1 else ''}, blobs in {root}); Ctrl-C stops it")
            try:
                server.run()
            except SystemExit as exc:  # uvicorn exits on a startup failure it logged
                raise JobFailed(f"the job API stopped at start-up (status {exc.code})"
                                ) from None
            except KeyboardInterrupt as stop:  # uvicorn re-raises the signal it stopped on
                raise _stopped(stop) from None
        finally:
            runner.close()


def _stopped(stop: KeyboardInterrupt) -> Interrupted:
    """How serve reports the signal that stopped it: a server's normal end, said as such
    (jobs still running were stopped; nothing half-written is left in its folder)."""
    import signal

    from canvascast_cli.signals import signal_number

    signum = signal_number(stop)
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    return Interrupted(f"serve stopped ({name}); running jobs were stopped", signum=signum)


def _check_port(host: str, port: int) -> None:
    """A taken port is the user's to fix (exit 2), said before anything starts."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidInput(f"--host {host} --port {port}: cannot listen there "
                               f"({exc.strerror}); pick another --port") from None
