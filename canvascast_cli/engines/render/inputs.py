"""Resolve a timeline's inputs before anything is rendered: every problem at once, exit 2.

Each distinct image (the same resolved path, the same URL) is checked once and its
problems are reported for every scene that uses it. A local JPEG or PNG is checked without
decoding its pixels (``quick_image_problem``: its header, and that the file ends as a whole
one does, which a cut-off file does not); the render decodes it, scene by scene, while
earlier frames encode. A file that does not end as it should, and any other format, is
fully decoded here (a truncated JPEG passes ``verify()`` but not ``load()``). http(s)
images are downloaded to a temporary file in the cache, fully decoded, and only then
published there, within ``InputLimits`` (a total deadline, a per-read timeout, a size
cap). Should a still that passed fail to decode in the render after all, the render stops
with the same words and exit status (``image_decode_failed``) and writes nothing. Audio
files are opened with PyAV and must hold an audio stream; caption words must fall inside
the video, and every character of them must be in a font the render will give libass
(``fonts``).

Ctrl-C: the checks run on a few daemon worker threads while the main thread waits in
short slices, so a KeyboardInterrupt (or the CLI's SIGTERM subclass of it) propagates at
once. The workers stop between items and between downloaded chunks; one stuck in a read
or a decode is a daemon and does not keep the process alive. An abandoned download never
reaches its cache path; a temporary it leaves behind is swept by a later run.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlparse

from canvascast_cli.atomic import staged
from canvascast_cli.engines.render.fonts.faces import FONT_SUFFIXES
from canvascast_cli.engines.render.fonts.messages import missing_problems
from canvascast_cli.engines.render.fonts.plan import FontPlan, plan_fonts
from canvascast_cli.errors import (
    CanvasCastError,
    InvalidInput,
    RateLimited,
    Timeout,
    from_os_error,
    is_retryable,
)
from canvascast_cli.paths import cache_dir
from canvascast_cli.timeline import (
    CaptionStyle,
    ResolvedTimeline,
    Timeline,
    Word,
    read_words_file,
)

if TYPE_CHECKING:
    import httpx

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT = 60.0  # seconds for a whole download
READ_TIMEOUT = 10.0  # seconds a connect or any one read may wait
# A download's temporary this old was abandoned (the process was killed mid-download).
STALE_PART_SECONDS = 3600.0
DOWNLOAD_ATTEMPTS = 3  # tries of one download (first included), within its deadline

_WAIT_SLICE = 0.1  # the main thread waits this long at a time, so signals are handled

ImageCheck = Callable[[Path], "str | None"]


@dataclass(frozen=True)
class ResolvedInputs(ResolvedTimeline):
    """A resolved timeline with what the render worked out while resolving it."""

    fonts: FontPlan | None = None  # the face for each caption character (with captions)


@dataclass(frozen=True)
class InputLimits:
    """Bounds on fetching a timeline's remote inputs."""

    download_timeout: float = DOWNLOAD_TIMEOUT  # total seconds for one download
    read_timeout: float = READ_TIMEOUT  # seconds a connect or one read may wait
    download_max_bytes: int = MAX_DOWNLOAD_BYTES
    workers: int = min(4, os.cpu_count() or 2)  # images checked at once

    def __post_init__(self) -> None:
        if not (self.download_timeout > 0 and self.read_timeout > 0):
            raise ValueError("InputLimits: timeouts must be positive")
        if self.download_max_bytes < 1 or self.workers < 1:
            raise ValueError("InputLimits: download_max_bytes and workers must be >= 1")


def resolve_timeline(
    timeline: Timeline,
    base_dir: Path,
    *,
    limits: InputLimits = InputLimits(),
    transport: httpx.BaseTransport | None = None,
    check_image: ImageCheck | None = None,
    allow_missing_glyphs: bool = False,
    sleep: Callable[[float], None] | None = None,
) -> ResolvedInputs:
    """Check every input of ``timeline``; relative paths are read from ``base_dir``.

    Problems with the inputs are raised together as one ``InvalidInput``. When the inputs
    are fine but a download failed for the network's or the server's sake, that failure
    is raised as its own (retryable) class: ``Timeout``, ``ConnectionFailed``,
    ``ServerError``, ``RateLimited``. ``transport`` is handed to the ``httpx.Client`` that
    downloads; ``check_image(path)`` says what is wrong with an image file, or None, and
    is called once per distinct image (default: ``quick_image_problem`` for local files,
    the full decode ``image_problem`` for downloads, before they are cached). Caption
    characters no font has are problems too, unless ``allow_missing_glyphs`` (then they
    are listed in ``fonts.missing``; see the ``fonts`` package). ``sleep`` is what a
    download's retry waits with (default: a wait that Ctrl-C cuts short; tests record).
    """
    # Absolute, because ffmpeg runs in a private working directory.
    base_dir = base_dir.expanduser().absolute()
    problems: list[str] = []
    failures: list[CanvasCastError] = []  # not the input's fault

    # One job per distinct image; downloads first, they overlap the local decodes.
    keys: list[tuple[str, str]] = []
    jobs: dict[tuple[str, str], _Job] = {}
    for scene in timeline.scenes:
        if _is_url(scene.image):
            key = ("url", scene.image)
        else:
            key = ("path", str(_local_path(scene.image, base_dir)))
        keys.append(key)
    for key in sorted(dict.fromkeys(keys), key=lambda k: k[0] != "url"):
        kind, ref = key
        if kind == "url":
            jobs[key] = _download_job(ref, limits, check_image or image_problem)
        else:
            jobs[key] = _local_job(Path(ref), check_image or quick_image_problem)
    if any(kind == "url" for kind, _ in jobs):
        _sweep_partials(_images_cache())

    outcomes = _run_jobs(jobs, limits, transport, sleep)
    images: list[Path] = []
    for i, key in enumerate(keys):
        outcome = outcomes[key]
        field = f"scenes[{i}].image"
        if isinstance(outcome, Path):
            images.append(outcome)
        elif isinstance(outcome, InvalidInput):
            problems.append(f"{field}: {outcome.message}")
        elif isinstance(outcome, CanvasCastError):
            failures.append(_for_field(outcome, field))
        else:  # a bug in a check, not a problem with the input
            raise outcome

    narration = music = None
    if timeline.narration is not None:
        narration = _resolve_audio("narration.path", timeline.narration.path, base_dir, problems)
    if timeline.music is not None:
        music = _resolve_audio("music.path", timeline.music.path, base_dir, problems)

    words: list[Word] = []
    fonts: FontPlan | None = None
    captions = timeline.captions
    if captions is not None:
        raw_words: list[Word] = []
        field = "captions.words"
        try:
            if captions.transcript is not None:
                path = _local_path(captions.transcript, base_dir)
                field = "captions.transcript words"
                raw_words = read_words_file(path, field="captions.transcript")
            else:
                raw_words = list(captions.words or [])
            offset = captions.offset
            if offset is None:
                offset = timeline.narration.start if timeline.narration else 0.0
            words, word_problems = _place_words(raw_words, offset, timeline, field)
            problems += word_problems
        except InvalidInput as exc:
            problems.append(str(exc))
        # Every character against the style's fonts, the bundled one, installed ones.
        texts = [w.word for w in raw_words]
        fonts, font_problems = plan_fonts(texts, captions.style.fonts, base_dir,
                                          bold=captions.style.bold)
        problems += font_problems
        if fonts.missing and not allow_missing_glyphs:
            problems += missing_problems(fonts, texts, field)

    if problems:
        # The inputs must be fixed anyway; failed downloads are listed with them.
        problems += [str(f) for f in failures]
        noun = "problem" if len(problems) == 1 else "problems"
        raise InvalidInput(f"timeline inputs: {len(problems)} {noun}", details=problems)
    if failures:
        failures.sort(key=lambda f: f.retryable)  # one a retry cannot fix goes first
        first = failures[0]
        first.details = [f.message for f in failures[1:]]
        raise first
    return ResolvedInputs(
        timeline=timeline,
        images=images,
        narration=narration,
        music=music,
        words=words,
        base_dir=base_dir,
        fonts=fonts,
    )


def font_file(font: str, base_dir: Path) -> Path | None:
    """The font file one entry of a caption style's font list names, or None for a family."""
    if not font.lower().endswith(FONT_SUFFIXES):
        return None
    return _local_path(font, base_dir)


def font_files(style: CaptionStyle, base_dir: Path) -> list[Path]:
    """Every font file a caption style names."""
    return [p for p in (font_file(f, base_dir) for f in style.fonts) if p is not None]


def _place_words(
    words: list[Word], offset: float, timeline: Timeline, field: str
) -> tuple[list[Word], list[str]]:
    duration = timeline.duration
    slack = 0.5 / timeline.output.fps  # half a frame of rounding
    placed, problems = [], []
    for i, word in enumerate(words):
        start, end = word.start + offset, word.end + offset
        if start < -slack or end > duration + slack:
            problems.append(
                f"{field}[{i}] ({word.word!r}): {start:.3f}-{end:.3f} s is outside the video "
                f"(0-{duration:.3f} s)")
            continue
        placed.append(Word(word=word.word, start=max(0.0, start), end=min(duration, end),
                           probability=word.probability))
    placed.sort(key=lambda w: (w.start, w.end))
    return placed, problems


def _is_url(ref: str) -> bool:
    return urlparse(ref).scheme in ("http", "https")


def _local_path(ref: str, base_dir: Path) -> Path:
    path = Path(ref).expanduser()
    return path if path.is_absolute() else base_dir / path


def _for_field(exc: CanvasCastError, field: str) -> CanvasCastError:
    """The same failure, its message prefixed with the scene field it concerns."""
    message = f"{field}: {exc.message}"
    if isinstance(exc, RateLimited):
        return RateLimited(message, retry_after=exc.retry_after)
    return type(exc)(message)


# ---------------------------------------------------------------------------------------
# Images: one job per distinct image, on daemon worker threads


def image_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as a scene image, decoded in full; None when it is fine.

    The text follows the file's name: ``f"{path} {image_problem(path)}"``.
    """
    return _image_problem(path, decode=True)


def quick_image_problem(path: Path) -> str | None:
    """``image_problem`` without decoding the pixels of a JPEG or PNG that ends as a whole
    file does (its last bytes are the format's end marker): the header is read and checked.
    A file cut short, and any other format, is decoded in full."""
    return _image_problem(path, decode=False)


# The last bytes of a complete file: JPEG's EOI marker, PNG's IEND chunk (with its CRC).
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"\x00\x00\x00\x00IEND\xaeB`\x82"}


def _image_problem(path: Path, *, decode: bool) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            marker = _END_MARKERS.get(img.format or "")
            if decode or marker is None or not _ends_with(path, marker):
                img.load()
    except UnidentifiedImageError:
        return "is not an image Pillow can read"
    except Image.DecompressionBombError as exc:
        return f"is too large to decode safely ({exc})"
    except (OSError, SyntaxError, ValueError) as exc:
        return _decode_problem(exc)
    if width < 2 or height < 2:
        return f"is {width}x{height}; need at least 2x2 pixels"
    return None


def _ends_with(path: Path, marker: bytes) -> bool:
    with path.open("rb") as fh:
        if fh.seek(0, os.SEEK_END) < len(marker):
            return False
        fh.seek(-len(marker), os.SEEK_END)
        return fh.read() == marker


def _decode_problem(exc: BaseException) -> str:
    """``image_problem``'s words for an image whose pixels failed to decode."""
    return f"is corrupt or truncated ({exc})"


def image_decode_failed(images: Sequence[Path], path: Path, exc: BaseException
                        ) -> InvalidInput:
    """The error for a still the render could not decode (the checks up front read a
    JPEG's or PNG's header only): worded as those checks word it, for each scene with it."""
    problems = [f"scenes[{i}].image: {path} {_decode_problem(exc)}"
                for i, image in enumerate(images) if image == path]
    noun = "problem" if len(problems) == 1 else "problems"
    return InvalidInput(f"timeline inputs: {len(problems)} {noun}", details=problems)


class _Cancelled(Exception):
    """The main thread gave up (Ctrl-C): a worker drops what it is doing."""


class _Worker:
    """What one worker thread owns: the cancel flag it obeys and its own HTTP client."""

    def __init__(self, limits: InputLimits, transport: httpx.BaseTransport | None,
                 cancel: threading.Event, sleep: Callable[[float], None] | None = None
                 ) -> None:
        self.limits = limits
        self._transport = transport
        self._cancel = cancel
        self._sleep = sleep
        self._client: httpx.Client | None = None

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise _Cancelled

    def wait(self, seconds: float) -> None:
        """A retry's pause, cut short (and the work dropped) when the run is cancelled."""
        if self._sleep is not None:
            self._sleep(seconds)
        elif self._cancel.wait(seconds):
            raise _Cancelled

    def client(self) -> httpx.Client:
        if self._client is None:
            import httpx

            # Every connect and read waits at most this long; the total deadline is
            # checked between reads (so it is overshot by one read at most).
            wait = min(self.limits.read_timeout, self.limits.download_timeout)
            self._client = httpx.Client(transport=self._transport, timeout=httpx.Timeout(wait),
                                        follow_redirects=True)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


_Job = Callable[[_Worker], Path]
_K = TypeVar("_K")


def _run_jobs(jobs: dict[_K, _Job], limits: InputLimits, transport: httpx.BaseTransport | None,
              sleep: Callable[[float], None] | None = None
              ) -> dict[_K, Path | BaseException]:
    """Each job's path or exception, computed on daemon threads; the caller can be
    interrupted at any time (the workers are told to stop, and none outlives the process)."""
    if not jobs:
        return {}
    todo: queue.SimpleQueue[_K] = queue.SimpleQueue()
    for key in jobs:
        todo.put(key)
    done: queue.SimpleQueue[tuple[_K, Path | BaseException]] = queue.SimpleQueue()
    cancel = threading.Event()

    def work() -> None:
        worker = _Worker(limits, transport, cancel, sleep)
        try:
            while not cancel.is_set():
                try:
                    key = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    outcome: Path | BaseException = jobs[key](worker)
                except _Cancelled:
                    return
                except BaseException as exc:
                    outcome = exc
                done.put((key, outcome))
        finally:
            worker.close()

    threads = [threading.Thread(target=work, name=f"canvascast-inputs-{n}", daemon=True)
               for n in range(min(limits.workers, len(jobs)))]
    for thread in threads:
        thread.start()
    outcomes: dict[_K, Path | BaseException] = {}
    try:
        while len(outcomes) < len(jobs):
            try:
                key, outcome = done.get(timeout=_WAIT_SLICE)
            except queue.Empty:
                if not any(t.is_alive() for t in threads) and done.empty():
                    raise RuntimeError("input checks stopped before finishing") from None
                continue
            outcomes[key] = outcome
    finally:
        cancel.set()  # after an interrupt: the workers stop at their next chunk or item
    return outcomes


def _local_job(path: Path, check: ImageCheck) -> _Job:
    def job(worker: _Worker) -> Path:
        if path.is_dir():
            raise InvalidInput(f"{path} is a folder, not an image file")
        if not path.is_file():
            raise InvalidInput(f"file not found: {path}")
        if not os.access(path, os.R_OK):
            raise InvalidInput(f"file is not readable: {path}")
        problem = check(path)
        if problem:
            raise InvalidInput(f"{path} {problem}")
        return path

    return job


# ---------------------------------------------------------------------------------------
# Downloads: into a temporary in the cache, decoded, then published


def _images_cache() -> Path:
    return cache_dir() / "images"


def _sweep_partials(folder: Path) -> None:
    """Remove temporaries of downloads abandoned long ago (a process killed mid-way)."""
    cutoff = time.time() - STALE_PART_SECONDS
    try:
        candidates = list(folder.glob(".*.part"))
    except OSError:
        return
    for path in candidates:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to remove


def _download_job(url: str, limits: InputLimits, check: ImageCheck) -> _Job:
    def job(worker: _Worker) -> Path:
        suffix = Path(urlparse(url).path).suffix[:8] or ".img"
        target = _images_cache() / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)
        if target.is_file():
            if check(target) is None:
                return target
            target.unlink(missing_ok=True)  # cached by an older version: fetch it again
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _download(url, target, worker, check)
        except OSError as exc:
            raise from_os_error(exc, f"caching {url}") from None
        return target

    return job


def _download(url: str, target: Path, worker: _Worker, check: ImageCheck) -> None:
    """Fetch ``url`` into ``target`` within the worker's limits; publish only a good image.

    A failure another try may fix (a 5xx, a 429, a reset connection, a read timeout) is
    retried by the one retry policy while the download's total deadline allows; whatever
    the server answers is read by the one httpx mapping (``net``, as a ``DOWNLOAD``)."""
    from canvascast_cli.retry import RetryPolicy

    deadline = time.monotonic() + worker.limits.download_timeout

    def worth_another_try(exc: BaseException) -> bool:
        return is_retryable(exc) and time.monotonic() < deadline

    policy = RetryPolicy(attempts=DOWNLOAD_ATTEMPTS, sleep=worker.wait,
                         retry_if=worth_another_try)
    policy.call(_fetch_once, url, target, worker, check, deadline)


def _fetch_once(url: str, target: Path, worker: _Worker, check: ImageCheck,
                deadline: float) -> None:
    import httpx

    from canvascast_cli.net import DOWNLOAD, status_error, transport_error

    limits = worker.limits
    cap = limits.download_max_bytes
    too_slow = f"{url} did not download within {limits.download_timeout:g} s"
    worker.check_cancelled()
    try:
        with worker.client().stream("GET", url) as resp:
            if resp.status_code >= 300:
                raise status_error(resp.status_code, resp.headers, url, DOWNLOAD)
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise InvalidInput(f"{url} is {int(declared)} bytes, more than the "
                                   f"{_size(cap)} limit")
            with staged(target) as tmp:
                size = 0
                with tmp.open("wb") as out:
                    for chunk in resp.iter_bytes():
                        worker.check_cancelled()
                        if time.monotonic() > deadline:
                            raise Timeout(too_slow)
                        size += len(chunk)
                        if size > cap:
                            raise InvalidInput(f"{url} is larger than the {_size(cap)} limit")
                        out.write(chunk)
                worker.check_cancelled()
                problem = check(tmp)
                if problem:
                    raise InvalidInput(f"{url} {problem}")
                worker.check_cancelled()
    except httpx.HTTPError as exc:
        wait = min(limits.read_timeout, limits.download_timeout)
        raise transport_error(exc, url, timeout=wait) from None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _size(n: int) -> str:
    mib = 1024 * 1024
    return f"{n // mib} MiB" if n % mib == 0 else f"{n} bytes"


# ---------------------------------------------------------------------------------------
# Audio


def _resolve_audio(field: str, ref: str, base_dir: Path, problems: list[str]) -> Path | None:
    path = _local_path(ref, base_dir)
    if path.is_dir():
        problems.append(f"{field}: {path} is a folder, not an audio file")
        return None
    if not path.is_file():
        problems.append(f"{field}: file not found: {path}")
        return None
    try:
        probe_audio(path)
    except InvalidInput as exc:
        problems.append(f"{field}: {exc}")
        return None
    return path


def probe_audio(path: Path) -> float:
    """Seconds of audio in ``path``; InvalidInput if it has no decodable audio stream."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InvalidInput(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            else:
                seconds = 0.0
            # Decode the first packet: a header that parses but holds nothing playable
            # would otherwise only fail inside ffmpeg, halfway through a render.
            for _frame in container.decode(stream):
                break
            else:
                raise InvalidInput(f"{path} holds no decodable audio")
    except InvalidInput:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InvalidInput(f"{path} is not a readable audio file ({exc})") from None
    return seconds
