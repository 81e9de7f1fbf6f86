"""``--upload`` on render, transcribe and images: the real supabase client against the fake
Storage server (tests/storage_server.py), and the folder store."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from canvascast_cli.cli.context import Services
from tests.helpers import Result, small_output, tone_wav, write_timeline
from tests.storage_server import TEST_KEY, FakeStorage

IMAGES = ("images", "a red kite", "a harbour", "--provider", "placeholder", "--seed", "3",
          "--size", "320x180")


@pytest.fixture
def supabase_env(fake: FakeStorage, monkeypatch: pytest.MonkeyPatch) -> FakeStorage:
    monkeypatch.setenv("CANVASCAST_STORAGE__PROVIDER", "supabase")
    monkeypatch.setenv("CANVASCAST_STORAGE__PREFIX", "ci/")
    monkeypatch.setenv("SUPABASE_URL", fake.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", TEST_KEY)
    return fake


@pytest.fixture
def run(cli: Callable[..., Result]) -> Callable[..., Result]:
    sleeps: list[float] = []

    def go(*args: str) -> Result:
        return cli(*args, services=Services(sleep=sleeps.append))
    return go


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_images_upload_to_supabase_with_signed_urls(run: Callable[..., Result],
                                                    supabase_env: FakeStorage) -> None:
    result = run("--json", *IMAGES, "-o", "out", "--upload")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = result.json()
    uploads = doc["uploads"]
    assert [Path(u["file"]).name for u in uploads] == ["001-a-red-kite.png",
                                                       "002-a-harbour.png"]
    for upload in uploads:
        digest = sha(Path(upload["file"]))
        assert upload["sha256"] == digest and upload["uploaded"] is True
        assert upload["object_path"] == (f"ci/{digest[:2]}/{digest}/"
                                         f"{Path(upload['file']).name}")
        assert (upload["provider"], upload["location"]) == ("supabase", "canvascast")
        assert upload["expires_at"] > time.time() + 3000
        fetched = httpx.get(upload["signed_url"])  # no key: the signature is the right
        assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() \
            == digest
    assert TEST_KEY not in result.stdout + result.stderr
    # The same images again: a cache hit, and nothing uploaded twice.
    posts = len(supabase_env.calls("POST", "/object/canvascast/"))
    again = run("--json", *IMAGES, "-o", "out2", "--upload")
    assert again.exit_code == 0 and again.json()["cache"] == "hit"
    assert [u["uploaded"] for u in again.json()["uploads"]] == [False, False]
    assert len(supabase_env.calls("POST", "/object/canvascast/")) == posts


def test_render_upload_prints_the_object_and_link(run: Callable[..., Result],
                                                  supabase_env: FakeStorage,
                                                  media: Path) -> None:
    timeline = write_timeline(media, {"output": small_output(),
                                      "scenes": [{"image": "img0.jpg", "duration": 1}]})
    result = run("render", timeline, "-o", "clip.mp4", "--upload")
    assert result.exit_code == 0, result.stderr
    digest = sha(Path("clip.mp4"))
    assert f"Uploaded clip.mp4 -> supabase:canvascast/ci/{digest[:2]}/{digest}/clip.mp4" \
        in result.stderr
    assert "signed URL (valid 1 h): http://127.0.0.1" in result.stderr
    assert supabase_env.buckets["canvascast"][f"ci/{digest[:2]}/{digest}/clip.mp4"].data \
        == Path("clip.mp4").read_bytes()


def test_transcribe_upload_needs_a_file(run: Callable[..., Result],
                                        supabase_env: FakeStorage, tmp_path: Path) -> None:
    audio = tone_wav(tmp_path / "tone.wav", 1.0)
    result = run("--json", "transcribe", audio, "--upload")
    assert result.exit_code == 2
    assert "--upload needs -o" in result.json()["error"]["message"]


def test_missing_keys_are_exit_2_before_any_work(run: Callable[..., Result], fake: FakeStorage,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVASCAST_STORAGE__PROVIDER", "supabase")
    result = run("--json", *IMAGES, "-o", "out", "--upload")
    assert result.exit_code == 2
    message = result.json()["error"]["message"]
    assert "SUPABASE_URL" in message and "SUPABASE_SERVICE_KEY" in message
    assert not Path("out").exists()  # nothing was generated


def test_a_failed_upload_keeps_the_result_and_says_so(run: Callable[..., Result],
                                                      supabase_env: FakeStorage) -> None:
    supabase_env.fail(403, times=50, fragment="/object/")
    result = run("--json", *IMAGES, "-o", "out", "--upload")
    assert result.exit_code != 0
    message = result.json()["error"]["message"]
    assert "001-a-red-kite.png is written; uploading it failed" in message
    assert "SUPABASE_SERVICE_KEY" in message and TEST_KEY not in result.stdout
    assert Path("out/001-a-red-kite.png").stat().st_size > 0  # the result is intact


def test_upload_to_the_folder_store_by_default(run: Callable[..., Result],
                                               monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("CANVASCAST_STORAGE__LOCAL_DIR", str(tmp_path / "kept"))
    result = run("--json", *IMAGES, "-o", "out", "--upload")
    assert result.exit_code == 0, result.stdout
    for upload in result.json()["uploads"]:
        stored = tmp_path / "kept" / upload["object_path"]
        assert stored.read_bytes() == Path(upload["file"]).read_bytes()
        assert upload["signed_url"] == stored.as_uri()


def test_the_modal_toml_default_and_no_upload(run: Callable[..., Result],
                                              supabase_env: FakeStorage,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVASCAST_STORAGE__UPLOAD", "true")
    assert "uploads" in run("--json", *IMAGES, "-o", "out").json()
    assert "uploads" not in run("--json", *IMAGES, "-o", "out2", "--no-upload").json()


def test_a_remote_render_is_uploaded_by_its_host(cli: Callable[..., Result],
                                                 supabase_env: FakeStorage, media: Path,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Through `canvascast serve` holding its own Supabase keys: the host uploads the
    video, the client only signs it (the video does not travel back up through it)."""
    from tests.test_remote import TOKEN, running_serve

    with running_serve(tmp_path, workers=1) as url:
        monkeypatch.setenv("MODAL_ENDPOINT", url)
        monkeypatch.setenv("MODAL_TOKEN", TOKEN)
        timeline = write_timeline(media, {"output": small_output(),
                                          "scenes": [{"image": "img1.jpg", "duration": 1}]})
        result = cli("--json", "render", timeline, "-o", "clip.mp4", "--remote", "--upload")
        assert result.exit_code == 0, result.stdout + result.stderr
        (upload,) = result.json()["uploads"]
        digest = sha(Path("clip.mp4"))
        assert upload["sha256"] == digest and upload["uploaded"] is False
        # Named by the host after its artifact (video.mp4), not by the client's -o.
        assert upload["object_path"] == f"ci/{digest[:2]}/{digest}/video.mp4"
        stored = supabase_env.buckets["canvascast"][upload["object_path"]]
        assert stored.data == Path("clip.mp4").read_bytes()
        # One upload request, and it was the host's: the client sent no object body.
        assert len(supabase_env.calls("POST", f"/object/canvascast/{upload['object_path']}")) \
            == 1
        assert httpx.get(upload["signed_url"]).content == stored.data
