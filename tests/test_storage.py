"""The artifact store: the real ``supabase`` client against a fake Storage server, the
folder store, and ``open_store``. Nothing here waits: retries sleep through a recorder."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from canvascast_cli.config import Settings, StorageConfig
from canvascast_cli.errors import (
    AuthFailed,
    ConnectionFailed,
    IntegrityError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
)
from canvascast_cli.retry import RetryPolicy
from canvascast_cli.storage import (
    ArtifactStore,
    LocalStore,
    SupabaseStore,
    object_path,
    open_store,
    safe_name,
)
from canvascast_cli.storage.supabase import check_project_url
from tests.storage_server import TEST_KEY, FakeStorage

BUCKET = "canvascast"


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_store(fake: FakeStorage, sleeps: Sleeps, *, key: str = TEST_KEY,
               bucket: str = BUCKET, prefix: str = "renders/", attempts: int = 3
               ) -> SupabaseStore:
    return SupabaseStore(fake.url, key, bucket, prefix,
                         retry=RetryPolicy(attempts=attempts, sleep=sleeps))


@pytest.fixture
def store(fake: FakeStorage, sleeps: Sleeps) -> Iterator[SupabaseStore]:
    with make_store(fake, sleeps) as s:
        yield s


@pytest.fixture
def video(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "my video.mp4"
    # CR/LF runs and every byte value: the multipart body must carry them exactly.
    path.write_bytes(bytes(range(256)) * 40 + b"\r\n\r\n--\r\n" * 50)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def no_secret(*texts: object) -> None:
    for text in texts:
        assert TEST_KEY not in str(text)
        assert TEST_KEY[-20:] not in str(text)


# ---------------------------------------------------------------------------------------
# Names


def test_object_names_are_content_addressed() -> None:
    sha = "ab" + "0" * 62
    assert object_path("", sha, "out.mp4") == f"ab/{sha}/out.mp4"
    assert object_path("renders/", sha, "a/b/../my clip.mp4") == f"renders/ab/{sha}/my_clip.mp4"
    assert safe_name("..") == "file"
    assert safe_name(".hidden") == "hidden"
    assert safe_name("x" * 300 + ".mp4").endswith(".mp4")
    assert len(safe_name("x" * 300 + ".mp4")) == 200
    with pytest.raises(InvalidInput, match="sha256"):
        object_path("", "not-a-sha", "x")
    with pytest.raises(InvalidInput, match="prefix"):
        object_path("../", sha, "x")


def test_project_url_is_checked_without_echoing_secrets() -> None:
    assert check_project_url("https://abc.supabase.co/") == "https://abc.supabase.co"
    assert check_project_url("https://abc.supabase.co/storage/v1") == "https://abc.supabase.co"
    with pytest.raises(InvalidInput) as info:
        check_project_url("https://user:hunter2@abc.supabase.co", source="SUPABASE_URL")
    assert "hunter2" not in str(info.value) and "SUPABASE_URL" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        check_project_url("https://abc.supabase.co/?apikey=hunter2")
    assert "hunter2" not in str(info.value)
    with pytest.raises(InvalidInput, match="http"):
        check_project_url("abc.supabase.co")


# ---------------------------------------------------------------------------------------
# Supabase: put


def test_put_uploads_once_under_the_content_address(
        fake: FakeStorage, store: SupabaseStore, video: tuple[Path, str]) -> None:
    path, sha = video
    assert isinstance(store, ArtifactStore)
    stored = store.put(path, sha256=sha, name=path.name)
    key = f"renders/{sha[:2]}/{sha}/my_video.mp4"
    assert (stored.provider, stored.location, stored.object_path) == ("supabase", BUCKET, key)
    assert (stored.sha256, stored.size, stored.uploaded) == (sha, path.stat().st_size, True)
    assert fake.buckets[BUCKET][key].data == path.read_bytes()
    assert fake.buckets[BUCKET][key].content_type == "video/mp4"
    assert fake.buckets[BUCKET][key].cache_control == "max-age=31536000"
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", f"/object/info/{BUCKET}/{key}"), ("POST", f"/object/{BUCKET}/{key}")]
    upload = fake.requests[1]
    assert upload.headers["apikey"] == TEST_KEY
    assert upload.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert upload.headers["x-upsert"] == "true"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    no_secret(repr(store), stored, dataclasses.asdict(stored))


def test_second_put_of_the_same_file_sends_nothing(
        fake: FakeStorage, store: SupabaseStore, video: tuple[Path, str]) -> None:
    path, sha = video
    assert store.put(path, sha256=sha, name=path.name).uploaded
    again = store.put(path, sha256=sha, name=path.name)
    assert not again.uploaded
    assert len(fake.calls("POST")) == 1
    assert len(fake.calls("GET", "/object/info/")) == 2
    assert store.exists(again.object_path)
    assert not store.exists(again.object_path.replace("my_video", "other"))


def test_put_refuses_a_file_whose_sha256_is_not_the_announced_one(
        fake: FakeStorage, store: SupabaseStore, video: tuple[Path, str]) -> None:
    path, _ = video
    with pytest.raises(IntegrityError, match="nothing was uploaded"):
        store.put(path, sha256="0" * 64, name=path.name)
    assert not fake.calls("POST")


def test_a_conflicting_upload_of_the_same_object_counts_as_stored(
        fake: FakeStorage, store: SupabaseStore, video: tuple[Path, str]) -> None:
    path, sha = video
    key = object_path("renders/", sha, path.name)
    fake.put_object(BUCKET, key, path.read_bytes())  # the other machine's upload
    fake.fail(404, method="GET", fragment="/object/info/",
              body={"statusCode": "404", "error": "not_found", "message": "Object not found"})
    fake.fail(409, method="POST", body={"statusCode": "409", "error": "Duplicate",
                                        "message": "The resource already exists"})
    stored = store.put(path, sha256=sha, name=path.name)
    assert not stored.uploaded
    assert [r.method for r in fake.requests] == ["GET", "POST", "GET"]


def test_503_is_retried_with_the_policy(fake: FakeStorage, store: SupabaseStore,
                                        sleeps: Sleeps, video: tuple[Path, str]) -> None:
    path, sha = video
    fake.fail(503, times=2, method="POST")
    stored = store.put(path, sha256=sha, name=path.name)
    assert stored.uploaded
    assert len(fake.calls("POST")) == 3
    assert len(sleeps) == 2
    assert fake.buckets[BUCKET][stored.object_path].data == path.read_bytes()


def test_429_honours_retry_after(fake: FakeStorage, store: SupabaseStore, sleeps: Sleeps,
                                 video: tuple[Path, str]) -> None:
    path, sha = video
    fake.fail(429, method="GET", headers={"Retry-After": "17"},
              body={"message": "rate limited"})
    assert store.put(path, sha256=sha, name=path.name).uploaded
    assert sleeps and sleeps[0] >= 17
    fake.fail(429, times=10, headers={"Retry-After": "5"}, body=b"slow down")
    with pytest.raises(RateLimited) as info:
        store.exists("ab/" + "a" * 64 + "/x.mp4")
    assert info.value.retry_after == 5


def test_503_every_time_fails_as_a_server_error_and_leaves_the_file(
        fake: FakeStorage, store: SupabaseStore, sleeps: Sleeps,
        video: tuple[Path, str]) -> None:
    path, sha = video
    before = path.read_bytes()
    fake.fail(503, times=100, method="POST", body=b"<html>upstream down</html>")
    with pytest.raises(ServerError, match="503") as info:
        store.put(path, sha256=sha, name=path.name)
    assert len(fake.calls("POST")) == 3 and len(sleeps) == 2
    assert path.read_bytes() == before
    no_secret(info.value)


def test_connection_refused_is_retried_then_reported(sleeps: Sleeps,
                                                     video: tuple[Path, str]) -> None:
    server = FakeStorage().start()
    url = server.url
    server.stop()
    with (SupabaseStore(url, TEST_KEY, BUCKET, retry=RetryPolicy(sleep=sleeps)) as s,
          pytest.raises(ConnectionFailed) as info):
        s.exists("ab/" + "a" * 64 + "/x.mp4")
    assert len(sleeps) == 2
    no_secret(info.value)


# ---------------------------------------------------------------------------------------
# Supabase: clear errors


def test_a_wrong_apikey_is_auth_failed_naming_the_variable(
        fake: FakeStorage, sleeps: Sleeps, video: tuple[Path, str]) -> None:
    path, sha = video
    wrong = TEST_KEY[:-4] + "XXXX"
    with make_store(fake, sleeps, key=wrong) as s, pytest.raises(AuthFailed) as info:
        s.put(path, sha256=sha, name=path.name)
    message = str(info.value)
    assert "SUPABASE_SERVICE_KEY" in message and "service_role" in message
    assert "401" in message
    assert wrong not in message and wrong not in repr(s)
    assert info.value.exit_code == 3
    assert not sleeps  # never retried
    assert not fake.calls("POST")


def test_a_403_from_storage_is_auth_failed(fake: FakeStorage, store: SupabaseStore,
                                           video: tuple[Path, str]) -> None:
    path, sha = video
    fake.fail(403, method="POST", body={"statusCode": "403", "error": "Unauthorized",
                                        "message": f"new row violates row-level security "
                                                   f"policy ({TEST_KEY})"})
    with pytest.raises(AuthFailed, match="SUPABASE_SERVICE_KEY") as info:
        store.put(path, sha256=sha, name=path.name)
    no_secret(info.value)  # even a server echoing the key is scrubbed


def test_a_missing_bucket_says_how_to_create_it(fake: FakeStorage, sleeps: Sleeps,
                                                video: tuple[Path, str]) -> None:
    path, sha = video
    with make_store(fake, sleeps, bucket="nope") as s, pytest.raises(InvalidInput) as info:
        s.put(path, sha256=sha, name=path.name)
    assert "'nope'" in str(info.value) and "New bucket" in str(info.value)
    assert info.value.exit_code == 2
    assert not sleeps


def test_a_file_over_the_upload_limit_is_invalid_input(sleeps: Sleeps,
                                                       video: tuple[Path, str]) -> None:
    path, sha = video
    server = FakeStorage(max_size=100).start()
    try:
        with make_store(server, sleeps) as s, pytest.raises(PayloadTooLarge) as info:
            s.put(path, sha256=sha, name=path.name)
    finally:
        server.stop()
    assert "upload limit" in str(info.value) and info.value.exit_code == 2
    assert not sleeps


def test_a_legacy_400_carrying_a_404_body_reads_as_the_404(
        fake: FakeStorage, store: SupabaseStore) -> None:
    # Older Storage versions answer HTTP 400 and put the real status in the body.
    fake.fail(400, method="GET", body={"statusCode": "404", "error": "Bucket not found",
                                       "message": "Bucket not found"})
    with pytest.raises(InvalidInput, match="does not exist"):
        store.exists("ab/" + "a" * 64 + "/x.mp4")


# ---------------------------------------------------------------------------------------
# Supabase: signed URLs and downloads


def test_a_signed_url_can_be_fetched_without_the_key(
        fake: FakeStorage, store: SupabaseStore, video: tuple[Path, str]) -> None:
    path, sha = video
    stored = store.put(path, sha256=sha, name=path.name)
    url = store.signed_url(stored.object_path, 600)
    assert url.startswith(f"{fake.url}/storage/v1/object/sign/{BUCKET}/renders/")
    assert "token=" in url
    no_secret(url)
    sign = fake.calls("POST", "/object/sign/")[0]
    assert sign.headers["apikey"] == TEST_KEY
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content == path.read_bytes()
    fake.clock = lambda: 1e12  # long after it expired
    assert httpx.get(url).status_code == 400
    with pytest.raises(InvalidInput, match="expiry"):
        store.signed_url(stored.object_path, 0)


def test_download_verifies_and_writes_whole(fake: FakeStorage, store: SupabaseStore,
                                            video: tuple[Path, str], tmp_path: Path) -> None:
    path, sha = video
    stored = store.put(path, sha256=sha, name=path.name)
    dest = tmp_path / "out" / "back.mp4"
    dest.parent.mkdir()
    store.download(stored.object_path, dest, sha256=sha)
    assert dest.read_bytes() == path.read_bytes()
    get = fake.calls("GET", "/object/sign/")[-1]
    assert "apikey" not in get.headers and "authorization" not in get.headers


def test_a_corrupted_object_raises_integrity_and_leaves_nothing(
        fake: FakeStorage, store: SupabaseStore, video: tuple[Path, str],
        tmp_path: Path) -> None:
    path, sha = video
    stored = store.put(path, sha256=sha, name=path.name)
    fake.buckets[BUCKET][stored.object_path].data = b"bit rot" + path.read_bytes()[7:]
    folder = tmp_path / "dl"
    folder.mkdir()
    with pytest.raises(IntegrityError, match="sha256"):
        store.download(stored.object_path, folder / "back.mp4", sha256=sha)
    assert list(folder.iterdir()) == []


def test_download_of_a_missing_object_is_not_found(store: SupabaseStore,
                                                   tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.download("ab/" + "a" * 64 + "/x.mp4", tmp_path / "x.mp4", sha256="a" * 64)
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(InvalidInput, match="object path"):
        store.exists("../etc/passwd")


def test_a_download_interrupted_by_503_is_retried(
        fake: FakeStorage, store: SupabaseStore, sleeps: Sleeps,
        video: tuple[Path, str], tmp_path: Path) -> None:
    path, sha = video
    stored = store.put(path, sha256=sha, name=path.name)
    fake.fail(503, method="GET", fragment="/object/sign/")
    store.download(stored.object_path, tmp_path / "back.mp4", sha256=sha)
    assert (tmp_path / "back.mp4").read_bytes() == path.read_bytes()
    assert len(sleeps) == 1


def test_errors_raised_anywhere_never_show_the_key(
        fake: FakeStorage, store: SupabaseStore, video: tuple[Path, str]) -> None:
    path, sha = video
    fake.fail(500, times=10, body={"statusCode": "500", "error": "internal",
                                   "message": f"boom {TEST_KEY}"})
    with pytest.raises(ServerError) as info:
        store.put(path, sha256=sha, name=path.name)
    no_secret(info.value, repr(info.value), info.value.to_dict())


# ---------------------------------------------------------------------------------------
# The folder store


def test_local_store_round_trip(tmp_path: Path, video: tuple[Path, str]) -> None:
    path, sha = video
    store = LocalStore(tmp_path / "artifacts", prefix="r/")
    assert isinstance(store, ArtifactStore)
    stored = store.put(path, sha256=sha, name=path.name)
    assert stored.uploaded and stored.object_path == f"r/{sha[:2]}/{sha}/my_video.mp4"
    assert stored.location == str(tmp_path / "artifacts")
    assert not store.put(path, sha256=sha, name=path.name).uploaded
    assert store.exists(stored.object_path)
    url = store.signed_url(stored.object_path, 60)
    assert url.startswith("file://") and url.endswith("/my_video.mp4")
    dest = tmp_path / "back.mp4"
    store.download(stored.object_path, dest, sha256=sha)
    assert dest.read_bytes() == path.read_bytes()
    leftovers = [p.name for p in (tmp_path / "artifacts").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_local_store_checks_bytes_both_ways(tmp_path: Path, video: tuple[Path, str]) -> None:
    path, sha = video
    store = LocalStore(tmp_path / "a")
    with pytest.raises(IntegrityError):
        store.put(path, sha256="1" * 64, name=path.name)
    assert not store.exists(object_path("", "1" * 64, path.name))
    stored = store.put(path, sha256=sha, name=path.name)
    (tmp_path / "a" / stored.object_path).write_bytes(b"x" * stored.size)  # corrupted
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError):
        store.download(stored.object_path, out / "v.mp4", sha256=sha)
    assert list(out.iterdir()) == []
    with pytest.raises(NotFound):
        store.signed_url(object_path("", "2" * 64, "x"), 60)


# ---------------------------------------------------------------------------------------
# open_store


def test_open_store_local_defaults_to_the_state_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANVASCAST_HOME", str(tmp_path / "home"))
    store = open_store(Settings(), {})
    assert isinstance(store, LocalStore)
    assert store.folder == tmp_path / "home" / "artifacts"
    other = open_store(StorageConfig(local_dir=str(tmp_path / "mine")), {})
    assert isinstance(other, LocalStore) and other.folder == tmp_path / "mine"


def test_open_store_supabase_needs_both_variables() -> None:
    config = StorageConfig(provider="supabase")
    with pytest.raises(InvalidInput) as info:
        open_store(config, {"SUPABASE_URL": "https://abc.supabase.co"})
    message = str(info.value)
    assert "SUPABASE_SERVICE_KEY" in message and "SUPABASE_URL" in message
    assert "Project Settings -> API" in message and info.value.exit_code == 2
    custom = StorageConfig(provider="supabase", url_env="MY_URL", key_env="MY_KEY")
    with pytest.raises(InvalidInput, match="MY_URL and MY_KEY"):
        open_store(custom, {"SUPABASE_URL": "x", "SUPABASE_SERVICE_KEY": "y"})
    with pytest.raises(InvalidInput) as info:
        open_store(config, {"SUPABASE_URL": "https://u:hunter2@abc.supabase.co",
                            "SUPABASE_SERVICE_KEY": TEST_KEY})
    no_secret(info.value)
    assert "hunter2" not in str(info.value)


def test_open_store_supabase_builds_a_working_store(fake: FakeStorage, sleeps: Sleeps,
                                                    video: tuple[Path, str]) -> None:
    path, sha = video
    config = StorageConfig(provider="supabase", bucket=BUCKET, prefix="x/")
    store = open_store(config, {"SUPABASE_URL": fake.url, "SUPABASE_SERVICE_KEY": TEST_KEY},
                       retry=RetryPolicy(sleep=sleeps))
    try:
        assert isinstance(store, SupabaseStore)
        assert store.put(path, sha256=sha, name="v.mp4").object_path.startswith("x/")
        no_secret(repr(store))
    finally:
        store.close()
