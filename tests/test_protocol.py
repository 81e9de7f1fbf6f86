"""The wire format: one table of functions every side agrees with, one error <-> status
table that survives a round trip, references and ids checked whole, and a reference page
that is what the module says."""

from __future__ import annotations

import importlib
import json
import typing

import httpx
import pytest

from canvascast_cli import errors
from canvascast_cli.config import FunctionName, FunctionsConfig
from canvascast_cli.dispatch import cost
from canvascast_cli.dispatch.http import HttpBackend
from canvascast_cli.protocol import (
    FUNCTIONS,
    HTTP_STATUS,
    JobStatus,
    RenderPayload,
    TranscribePayload,
    blob_ref,
    check_job_id,
    check_sha256,
    envelope,
    http_status,
    parse_payload,
    parse_ref,
)
from canvascast_cli.protocol.reference import BEGIN, END, tables
from canvascast_cli.retry import RetryPolicy
from tests.helpers import REPO

SHA = "ab" * 32


def test_one_list_of_functions() -> None:
    names = set(FUNCTIONS)
    assert names == set(typing.get_args(FunctionName))
    assert names == set(FunctionsConfig.model_fields)
    assert names == set(cost.GUESSES)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_each_function_names_a_real_engine_entry(name: str) -> None:
    module, _, attr = FUNCTIONS[name].entry.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_references_and_ids_are_checked_whole() -> None:
    assert parse_ref(f"blob:{SHA}.jpg") == (SHA, ".jpg")
    assert parse_ref(f"blob:{SHA}") == (SHA, "")
    for bad in (f"blob:{SHA}\n", f"blob:{SHA}.jpg\n", f" blob:{SHA}", f"blob:{SHA[:-1]}",
                f"blob:{SHA.upper()}", "/etc/passwd", None, 5):
        assert parse_ref(bad) is None, bad
    assert blob_ref(SHA, ".JPEG") == f"blob:{SHA}.jpeg"
    assert blob_ref(SHA, "../x") == f"blob:{SHA}"
    with pytest.raises(errors.InvalidInput):
        check_sha256(SHA + "\n")
    assert check_job_id("job-" + "0" * 32) and check_job_id("fc-01ABCdef")
    for bad in ("../../v1/health", "job-1", "fc-", "job-" + "0" * 32 + "\n", "fc-a/b"):
        with pytest.raises(errors.NotFound):
            check_job_id(bad)


def test_payload_problems_name_their_fields() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        parse_payload("transcribe_audio", {"audio": "/etc/passwd", "beam_size": 99,
                                           "bogus": 1})
    details = "\n".join(caught.value.details)
    assert "audio:" in details and "beam_size:" in details and "bogus: unknown field" \
        in details
    with pytest.raises(errors.InvalidInput, match="unknown function 'x'; allowed: "
                       "render_video, transcribe_audio, generate_images"):
        parse_payload("x", {})


def test_a_transcription_model_is_a_name_never_a_path() -> None:
    for bad in ("/etc", "../models/x", "/nonexistent", "tiny.en/../../etc"):
        with pytest.raises(Exception, match="is not a faster-whisper model name"):
            TranscribePayload(audio=f"blob:{SHA}.wav", model=bad)
    assert TranscribePayload(audio=f"blob:{SHA}.wav", model="small.en").model == "small.en"


@pytest.mark.parametrize("code", sorted(HTTP_STATUS))
def test_every_error_survives_the_wire(code: str) -> None:
    """The server answers an error with the table's status and the envelope; the client
    turns it back into the same class (same code, same retryable, same exit code)."""
    cls = errors.ERRORS[code]
    sent = cls(f"a {code}")
    assert http_status(sent) == HTTP_STATUS[code]
    body = json.dumps(envelope(error=sent)).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(http_status(sent), content=body,
                              headers={"content-type": "application/json"})

    backend = HttpBackend("http://api.test", "t", transport=httpx.MockTransport(handler),
                          retry=RetryPolicy(attempts=1, sleep=lambda _s: None))
    with pytest.raises(errors.CanvasCastError) as caught:
        backend.status("job-" + "0" * 32)
    got = caught.value
    if http_status(sent) >= 500:  # a 5xx is the server's fault whatever its body: retried
        assert got.retryable
    else:
        assert (got.code, got.retryable, got.exit_code) == (code, sent.retryable,
                                                            sent.exit_code)


def test_a_status_reads_back_as_it_was_written() -> None:
    status = JobStatus.model_validate({
        "id": "job-" + "0" * 32, "function": "render_video", "state": "done",
        "queue_seconds": 0.1234567, "result": {"artifacts": [{"name": "video.mp4",
                                                              "sha256": SHA, "size": 3}],
                                               "billed_seconds": 1.23456789, "later": 1}})
    dumped = status.model_dump(mode="json")
    assert dumped["queue_seconds"] == 0.123 and dumped["result"]["billed_seconds"] == 1.235
    result = JobStatus.model_validate(dumped).result
    assert result is not None and result.artifact("video.mp4") == result.artifacts[0]


def test_render_payload_is_the_timeline_model() -> None:
    payload = RenderPayload.model_validate({"timeline": {"scenes": [
        {"image": f"blob:{SHA}.jpg", "duration": 1}]}, "options": {"frame_range": [0, 5]}})
    assert payload.timeline.total_frames == 30
    schema = RenderPayload.model_json_schema()
    assert schema["properties"]["timeline"]["$ref"].endswith("/Timeline")


def test_the_reference_page_is_what_the_module_says() -> None:
    page = (REPO / "docs" / "wire-format.md").read_text(encoding="utf-8")
    generated = page[page.index(BEGIN): page.index(END) + len(END)]
    assert generated == tables(), ("docs/wire-format.md is out of date: "
                                   "python -m canvascast_cli.protocol.reference")


def test_the_payloads_choices_are_the_engines() -> None:
    """The payload models spell their choices as Literals (for the schema); each must be
    exactly what the engine accepts."""
    from canvascast_cli.engines.images.providers import PROVIDERS
    from canvascast_cli.engines.render.presets import X264_PRESETS
    from canvascast_cli.engines.transcribe.models import ENGINES
    from canvascast_cli.protocol import ImageProvider, TranscribeEngine, X264Preset

    assert typing.get_args(X264Preset) == X264_PRESETS
    assert typing.get_args(TranscribeEngine) == ENGINES
    assert typing.get_args(ImageProvider) == PROVIDERS
