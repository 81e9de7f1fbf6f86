"""``canvascast jobs``: remote jobs by id — wait for one and fetch its result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import BackendName, BackendOption, JsonFlag, OverwriteFlag
from canvascast_cli.cli.output import reporting
from canvascast_cli.errors import InvalidInput

app = typer.Typer(help="Remote jobs by id: wait for one and fetch its result (after the "
                  "client that submitted it went away).", no_args_is_help=True)

# What each artifact may be written as (-o): a render is an MP4, a transcript JSON.
SUFFIXES = {".mp4": (".mp4", ".m4v"), ".json": (".json",)}


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
        from canvascast_cli.cli.remote import open_backend, plan_backend, stages_for
        from canvascast_cli.dispatch.dispatcher import as_unavailable, wait_for
        from canvascast_cli.protocol import check_job_id
        from canvascast_cli.records import dump

        if backend == BackendName.local:
            raise InvalidInput("--backend local: jobs run on a remote backend; give http or "
                               "modal (or auto)")
        check_job_id(job_id)
        choice, config = plan_backend(application, backend.value, local=False, remote=True)
        with as_unavailable(choice.name):
            remote = open_backend(application, choice, config)
            try:
                with stages_for(application, "waiting", None, "") as stages:
                    status = wait_for(remote, job_id, stages)
                    assert status is not None  # no limit: it returns only when the job ends
                    if status.state != "done" or status.result is None:
                        if status.error is not None:
                            raise status.error.error()
                        raise InvalidInput(f"job {job_id} ended {status.state}")
                    artifacts = status.result.artifacts
                    if not artifacts:
                        raise InvalidInput(f"job {job_id} finished without artifacts")
                    written = []
                    if len(artifacts) == 1:
                        suffix = Path(artifacts[0].name).suffix
                        dest = check_destination(output, overwrite=overwrite, what="-o",
                                                 suffixes=SUFFIXES.get(suffix, (suffix,)))
                        with staged(dest, overwrite=overwrite,
                                    suffix=".part" + dest.suffix) as tmp:
                            stages.stage("downloading", artifacts[0].size, "bytes")
                            remote.download(artifacts[0].sha256, tmp, stages.update)
                        written.append(str(dest))
                    else:
                        if output.exists() and not output.is_dir():
                            raise InvalidInput(f"-o: {output}: job {job_id} made "
                                               f"{len(artifacts)} files; give a folder")
                        output.mkdir(parents=True, exist_ok=True)
                        for artifact in artifacts:
                            dest = check_destination(output / Path(artifact.name).name,
                                                     overwrite=overwrite, what="-o")
                            with staged(dest, overwrite=overwrite) as tmp:
                                remote.download(artifact.sha256, tmp)
                            written.append(str(dest))
            finally:
                remote.close()
        out.note(f"[green]Fetched[/green] job {job_id} ({status.function}) -> "
                 f"{', '.join(written)}")
        out.data({"id": job_id, "function": status.function, "state": status.state,
                  "outputs": written, "result": dump(status.result)},
                 text="\n".join(written))
