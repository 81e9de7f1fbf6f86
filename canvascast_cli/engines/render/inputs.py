"""Resolve a timeline's inputs before anything is rendered: every problem at once, exit 2.

Images are fully decoded here (a truncated JPEG passes ``verify()`` but not ``load()``),
in parallel; audio files are opened with PyAV and must hold an audio stream; http(s)
images are downloaded into the cache; caption words must fall inside the video.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from canvascast_cli.atomic import staged
from canvascast_cli.errors import InvalidInput, JobFailed
from canvascast_cli.paths import cache_dir
from canvascast_cli.timeline import ResolvedTimeline, Timeline, Word, read_words_file

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT = 30.0


def resolve_timeline(timeline: Timeline, base_dir: Path) -> ResolvedTimeline:
    """Check every input of ``timeline``; relative paths are read from ``base_dir``."""
    # Absolute, because ffmpeg runs in a private working directory.
    base_dir = base_dir.expanduser().absolute()
    problems: list[str] = []

    images: list[Path | None] = [None] * len(timeline.scenes)
    with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 2))) as pool:
        futures = [
            pool.submit(_resolve_image, i, scene.image, base_dir)
            for i, scene in enumerate(timeline.scenes)
        ]
        for i, future in enumerate(futures):
            try:
                images[i] = future.result()
            except InvalidInput as exc:
                problems.append(str(exc))

    narration = music = None
    if timeline.narration is not None:
        narration = _resolve_audio("narration.path", timeline.narration.path, base_dir, problems)
    if timeline.music is not None:
        music = _resolve_audio("music.path", timeline.music.path, base_dir, problems)

    words: list[Word] = []
    captions = timeline.captions
    if captions is not None:
        try:
            if captions.transcript is not None:
                path = _local_path(captions.transcript, base_dir)
                raw_words = read_words_file(path, field="captions.transcript")
                field = "captions.transcript words"
            else:
                raw_words = list(captions.words or [])
                field = "captions.words"
            offset = captions.offset
            if offset is None:
                offset = timeline.narration.start if timeline.narration else 0.0
            words, word_problems = _place_words(raw_words, offset, timeline, field)
            problems += word_problems
        except InvalidInput as exc:
            problems.append(str(exc))
        font_problem = check_font(captions.style.font, base_dir)
        if font_problem:
            problems.append(font_problem)

    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise InvalidInput(f"timeline inputs: {len(problems)} {noun}", details=problems)
    return ResolvedTimeline(
        timeline=timeline,
        images=[p for p in images if p is not None],
        narration=narration,
        music=music,
        words=words,
        base_dir=base_dir,
    )


FONT_SUFFIXES = (".ttf", ".otf", ".ttc")


def font_file(font: str, base_dir: Path) -> Path | None:
    """The font file a caption style names, or None when it names a family."""
    if not font.lower().endswith(FONT_SUFFIXES):
        return None
    return _local_path(font, base_dir)


def check_font(font: str, base_dir: Path) -> str | None:
    """A problem with the caption font, or None."""
    if "," in font or any(ord(c) < 32 for c in font):
        return f"captions.style.font: {font!r} cannot contain commas or control characters"
    path = font_file(font, base_dir)
    if path is None:
        return None
    if not path.is_file():
        return f"captions.style.font: font file not found: {path}"
    from PIL import ImageFont

    try:
        ImageFont.truetype(str(path), 12)
    except OSError as exc:
        return f"captions.style.font: {path} is not a font file ({exc})"
    return None


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
        placed.append(Word(word=word.word, start=max(0.0, start), end=min(duration, end)))
    placed.sort(key=lambda w: (w.start, w.end))
    return placed, problems


def _is_url(ref: str) -> bool:
    return urlparse(ref).scheme in ("http", "https")


def _local_path(ref: str, base_dir: Path) -> Path:
    path = Path(ref).expanduser()
    return path if path.is_absolute() else base_dir / path


def _resolve_image(index: int, ref: str, base_dir: Path) -> Path:
    field = f"scenes[{index}].image"
    path = _download(field, ref) if _is_url(ref) else _local_path(ref, base_dir)
    if not path.is_file():
        raise InvalidInput(f"{field}: file not found: {path}")
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"{field}: file is not readable: {path}")
    _check_image(field, path)
    return path


def _check_image(field: str, path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
    except UnidentifiedImageError:
        raise InvalidInput(f"{field}: {path} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{field}: {path} is corrupt or truncated ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"{field}: {path} is too large to decode safely ({exc})") from None
    if width < 2 or height < 2:
        raise InvalidInput(f"{field}: {path} is {width}x{height}; need at least 2x2 pixels")


def _download(field: str, url: str) -> Path:
    """Fetch ``url`` into the cache (content addressed by URL), atomically."""
    import httpx

    suffix = Path(urlparse(url).path).suffix[:8] or ".img"
    target = cache_dir() / "images" / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as resp:
            if 400 <= resp.status_code < 500:
                raise InvalidInput(f"{field}: {url} answered HTTP {resp.status_code}")
            if resp.status_code >= 300:
                raise JobFailed(f"{field}: {url} answered HTTP {resp.status_code}")
            size = 0
            with staged(target) as tmp, tmp.open("wb") as out:
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise InvalidInput(
                            f"{field}: {url} is larger than "
                            f"{MAX_DOWNLOAD_BYTES // (1024 * 1024)} MiB")
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise JobFailed(f"{field}: cannot download {url}: {exc}") from None
    return target


def _resolve_audio(field: str, ref: str, base_dir: Path, problems: list[str]) -> Path | None:
    path = _local_path(ref, base_dir)
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
