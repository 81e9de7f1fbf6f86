"""``canvascast jobs``: remote jobs by id — wait for one and fetch its result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import BackendName, BackendOption, JsonFlag, OverwriteFlag
from canvascast_cli.cli.output import reporting
from canvascast_cli.errors import InvalidInput, from_dict

app = typer.Typer(help="Remote jobs by id: wait for one and fetch its result (after the "
                  "client that submitted it went away).", no_args_is_help=True)

@app.command("wait")
def wait(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job id the submit printed.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUT", help="Where to write the result: a file for a "
        "render (.mp4) or transcription (.json); a folder for images.")],
    backend: BackendOption = BackendName.auto,
    overwrite: OverwriteFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Wait for job ID to end and write its result to OUT (sha256 checked)."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.atomic import check_destination, staged
        from canvascast_cli.cli.remote import make_backend, plan_backend, stages_for
        from canvascast_cli.dispatch.dispatcher import wait_for

        choice, config = plan_backend(application, backend.value, local=False, remote=True)
        remote = make_backend(application, choice.name, config)
        try:
            with stages_for(application, "waiting", None, "") as stages:
                status = wait_for(remote, job_id, stages)
                assert status is not None  # no limit: it returns only when the job ends
                if status["state"] != "done":
                    raise from_dict(status.get("error") or {"code": "JOB_FAILED",
                                                            "message": status["state"]})
                artifacts: list[dict[str, Any]] = list(
                    (status.get("result") or {}).get("artifacts") or [])
                if not artifacts:
                    raise InvalidInput(f"job {job_id} finished without artifacts")
                written = []
                if len(artifacts) == 1:
                    dest = check_destination(output, overwrite=overwrite, what="-o")
                    with staged(dest, overwrite=overwrite, suffix=".part" + dest.suffix) as tmp:
                        stages.stage("downloading", artifacts[0].get("size"), "bytes")
                        remote.download(artifacts[0]["sha256"], tmp, stages.update)
                    written.append(str(dest))
                else:
                    output.mkdir(parents=True, exist_ok=True)
                    for artifact in artifacts:
                        dest = check_destination(output / Path(artifact["name"]).name,
                                                 overwrite=overwrite, what="-o")
                        with staged(dest, overwrite=overwrite) as tmp:
                            remote.download(artifact["sha256"], tmp)
                        written.append(str(dest))
        finally:
            remote.close()
        out.note(f"[green]Fetched[/green] job {job_id} ({status['function']}) -> "
                 f"{', '.join(written)}")
        out.data({"id": job_id, "function": status["function"], "state": status["state"],
                  "outputs": written, "result": status.get("result")},
                 text="\n".join(written))
