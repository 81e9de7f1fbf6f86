"""The project's compute config: ``modal.toml``, validated, with precedence and provenance.

Modal itself never reads a project file called ``modal.toml`` (its own ``~/.modal.toml``
holds only token profiles); this file is canvascast's. Precedence, highest first:

    command-line flag  >  environment (CANVASCAST_<TABLE>__<KEY>)  >  modal.toml  >  defaults

Every effective value remembers where it came from (``Config.sources``), which is what
``canvascast config show`` prints. Every problem is reported at once, each naming the file
(or environment variable), the key path and what is allowed.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from canvascast_cli import env
from canvascast_cli.errors import ConfigError, InvalidInput

CONFIG_FILENAME = "modal.toml"
ENV_PREFIX = env.PREFIX
ENV_CONFIG = env.CONFIG

# GPU types Modal accepts (optionally with a count, "A100:2"). Modal checks this only on
# the server, at deploy time; checking here turns a failed deploy into a clear local error.
GPU_TYPES = (
    "T4", "L4", "A10G", "A10", "L40S", "A100", "A100-40GB", "A100-80GB", "H100", "H200", "B200",
)
_GPU_RE = re.compile(r"^(?P<type>[A-Za-z0-9-]+?)(?::(?P<count>[1-8]))?$")


class _Strict(BaseModel):
    # TOML values are typed already: a string where a number belongs is a mistake, not
    # something to coerce. Unknown keys are mistakes too (usually typos).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Modal's rule for environment names: letters, digits, dashes, periods, underscores; < 64.
ENVIRONMENT_PATTERN = r"^[A-Za-z0-9._-]{1,63}$"


class AppConfig(_Strict):
    name: str = Field("canvascast", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                      description="Modal app name the functions are deployed under.")
    environment: str | None = Field(None, pattern=ENVIRONMENT_PATTERN,
                                    description="Modal environment (default: the profile's).")
    endpoint: str | None = Field(
        None, description="Base URL of the job API (the HTTP backend): http(s), no "
        "credentials (the token goes in MODAL_TOKEN), without /v1.")
    volume: str = Field("canvascast-render-cache", pattern=r"^[A-Za-z0-9._-]{1,63}$",
                        description="Modal Volume holding the jobs' blobs (inputs, results).")


    @field_validator("endpoint")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        # The one check MODAL_ENDPOINT gets too; its message never shows a credential.
        from canvascast_cli.net import check_base_url

        if value is None:
            return None
        try:
            return check_base_url(value, source="endpoint")
        except InvalidInput as exc:
            raise ValueError(exc.message.removeprefix("endpoint: ")) from None


class FunctionConfig(_Strict):
    gpu: str | None = Field(None, description="GPU type, optionally with a count (A10G, H100:2).")
    cpu: float | None = Field(None, ge=0.125, le=64, description="CPU cores reserved.")
    memory: int | None = Field(None, ge=128, le=344064, description="Memory reserved, MiB.")
    timeout: int = Field(300, ge=10, le=86400, description="Seconds before an attempt is killed.")
    startup_timeout: int | None = Field(
        None, ge=10, le=86400, description="Seconds a container may take to start, model "
        "loading included (Modal's default: timeout).")
    retries: int = Field(0, ge=0, le=10, description="Server-side retries per call (Modal).")
    attempts: int = Field(3, ge=1, le=10, description="Client attempts per job; a job runs "
                          "at most attempts x (retries + 1) times.")
    min_containers: int = Field(0, ge=0, le=100, description="Containers kept warm.")
    max_containers: int = Field(10, ge=1, le=1000, description="Upper bound on containers.")
    scaledown_window: int = Field(60, ge=2, le=1200,
                                  description="Idle seconds before a container scales down.")
    buffer_containers: int | None = Field(
        None, ge=0, le=100, description="Idle containers kept ready beyond current demand "
        "(Modal's default: none).")
    batch_size: int | None = Field(None, ge=1, le=64, description="Items per invocation.")

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _GPU_RE.match(value)
        if not match or match["type"].upper() not in GPU_TYPES:
            raise ValueError(
                f"unknown GPU {value!r}; allowed: {', '.join(GPU_TYPES)} "
                "(optionally with a count 1-8, e.g. 'H100:2')")
        return value

    # A field validator (not a model validator) so that min > max is reported together
    # with any other problem in the same table.
    @field_validator("max_containers")
    @classmethod
    def _min_le_max(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_containers")
        if low is not None and low > value:
            raise ValueError(f"must be at least min_containers ({low}); got {value}")
        return value


class FunctionsConfig(_Strict):
    # FLUX.1-schnell's bfloat16 weights (~31.5 GiB: transformer 22, T5 encoder 9) fit an
    # L40S (48 GB) whole, not an A10G (24 GB); host memory for loading them (and for CPU
    # offload on a smaller GPU); start-up loads them onto the GPU (docs/modal.md).
    # Whisper on an A10G; render on 4 CPU / 8 GiB.
    generate_images: FunctionConfig = FunctionConfig(
        gpu="L40S", memory=40960, timeout=300, startup_timeout=600, retries=2,
        max_containers=10, scaledown_window=60, batch_size=5)
    render_video: FunctionConfig = FunctionConfig(
        cpu=4.0, memory=8192, timeout=600, retries=1, max_containers=5, scaledown_window=120)
    transcribe_audio: FunctionConfig = FunctionConfig(
        gpu="A10G", timeout=180, retries=2, max_containers=10, scaledown_window=60)


class BreakerConfig(_Strict):
    failure_threshold: int = Field(5, ge=1, le=1000,
                                   description="Consecutive failures that open the circuit.")
    reset_timeout: float = Field(60.0, gt=0, le=86400,
                                 description="Seconds open before one trial call is let through.")


class InputsConfig(_Strict):
    """Bounds on fetching a job's inputs (images given as URLs), wherever it runs."""

    download_timeout: float = Field(60.0, gt=0, le=3600,
                                    description="Seconds one download may take in all.")
    download_max_mb: int = Field(64, ge=1, le=4096, description="Largest download, MiB.")


class RetentionConfig(_Strict):
    """How long history and stored bytes are kept. The ledger is pruned as it is written;
    the job API's blob store at start-up, after uploads and every ``prune_interval``."""

    ledger_days: float = Field(90.0, gt=0, le=3650,
                               description="Ledger rows older than this are deleted.")
    ledger_max_rows: int = Field(200_000, ge=1000, le=100_000_000,
                                 description="At most this many ledger rows (oldest go).")
    blobs_days: float = Field(7.0, gt=0, le=3650,
                              description="Blobs unused for longer are deleted (job API).")
    blobs_max_gb: float = Field(50.0, gt=0, le=100_000,
                                description="The blob store's size cap, GB (least recently "
                                "used go first).")
    prune_interval: int = Field(600, ge=10, le=86400,
                                description="Seconds between blob store prunes.")


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FunctionName = Literal["generate_images", "render_video", "transcribe_audio"]


class WarmWindow(_Strict):
    function: FunctionName
    days: list[Day] = list(_DAYS)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$", description="HH:MM")
    min_containers: int = Field(1, ge=1, le=100)

    @field_validator("end")
    @classmethod
    def _start_before_end(cls, value: str, info: ValidationInfo) -> str:
        start = info.data.get("start")
        if start is not None and start >= value:
            raise ValueError(f"must be after start ({start}); got {value}; "
                             "split a window that crosses midnight in two")
        return value


class WarmConfig(_Strict):
    timezone: str = Field("UTC", description="IANA time zone the windows are read in.")
    windows: list[WarmWindow] = []
    check_every: Literal[5, 10, 15, 20, 30, 60] = Field(
        15, description="Minutes between the warm-pool reconciler's runs between window "
        "edges (it also runs at every edge).")

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as "
                             "'UTC', 'Europe/Berlin' or 'America/New_York'") from None
        return value


class StorageConfig(_Strict):
    """Where uploaded results go: Supabase Storage, or a folder (``local``)."""

    provider: Literal["local", "supabase"] = Field(
        "local", description="local: a folder (local_dir); supabase: Supabase Storage.")
    upload: bool = Field(False, description="Upload every result (the jobs' upload default).")
    bucket: str = Field("canvascast", pattern=r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$",
                        description="Supabase Storage bucket.")
    prefix: str = Field("", pattern=r"^([A-Za-z0-9._-]+/)*$",
                        description="Folder inside the bucket, ending in / (or empty).")
    url_env: str = Field("SUPABASE_URL", pattern=r"^[A-Z_][A-Z0-9_]*$",
                         description="Environment variable holding the project's URL.")
    key_env: str = Field("SUPABASE_SERVICE_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$",
                         description="Environment variable holding the service key.")
    signed_url_expiry: int = Field(3600, ge=60, le=604800,
                                   description="Seconds a signed URL stays valid.")
    local_dir: str | None = Field(None, description="provider local: the folder results "
                                  "are copied into (content-addressed); unset: the "
                                  "state folder's artifacts/.")


class CacheConfig(_Strict):
    """Results kept so the same job never runs twice (``canvascast cache``)."""

    enabled: bool = Field(True, description="Look up and keep results (a job's no-cache flag "
                          "skips it).")
    max_gb: float = Field(5.0, gt=0, le=100_000,
                          description="The local cache's size cap, GB (least recently "
                          "used go first).")


class RenderConfig(_Strict):
    """Render defaults (docs/scale.md)."""

    split: int | Literal["auto"] = Field(
        1, description="Pieces a render is cut into (--split's default): 1 = not split; "
        "auto = the cores locally, one piece per minute of video (at most "
        "[functions.render_video] max_containers) remotely.")

    @field_validator("split")
    @classmethod
    def _split_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1000:
            raise ValueError("allowed: auto, or 1 to 1000 pieces")
        return value


class BudgetConfig(_Strict):
    """Spend the status report compares the ledger's cost with (unset: none)."""

    daily_usd: float | None = Field(None, gt=0, description="USD per day (last 24 h).")
    monthly_usd: float | None = Field(None, gt=0, description="USD per month (last 30 days).")


class StatusConfig(_Strict):
    """When the status check calls an error rate CRITICAL."""

    error_rate: float = Field(0.25, gt=0, le=1, description="Share of failed attempts "
                              "over the window, per function and backend.")
    min_invocations: int = Field(5, ge=1, le=100_000, description="Attempts needed before "
                                 "an error rate counts.")


class PricingConfig(_Strict):
    """USD per second, Modal's list prices (modal.com/pricing); override with your own."""

    cpu_core_second: float = Field(0.0000131, ge=0)
    memory_gib_second: float = Field(0.00000222, ge=0)
    gpu_second: dict[str, float] = {
        "T4": 0.000164, "L4": 0.000222, "A10G": 0.000306, "A10": 0.000306,
        "L40S": 0.000542, "A100": 0.000583, "A100-40GB": 0.000583, "A100-80GB": 0.000694,
        "H100": 0.001097, "H200": 0.001261, "B200": 0.001736,
    }


class Settings(_Strict):
    app: AppConfig = AppConfig()
    functions: FunctionsConfig = FunctionsConfig()
    breaker: BreakerConfig = BreakerConfig()
    inputs: InputsConfig = InputsConfig()
    warm: WarmConfig = WarmConfig()
    pricing: PricingConfig = PricingConfig()
    retention: RetentionConfig = RetentionConfig()
    budget: BudgetConfig = BudgetConfig()
    status: StatusConfig = StatusConfig()
    storage: StorageConfig = StorageConfig()
    cache: CacheConfig = CacheConfig()
    render: RenderConfig = RenderConfig()

    @model_validator(mode="after")
    def _windows_fit(self) -> Settings:
        problems = []
        for i, window in enumerate(self.warm.windows):
            cap = getattr(self.functions, window.function).max_containers
            if window.min_containers > cap:
                problems.append(
                    f"warm.windows[{i}].min_containers: {window.min_containers} is more than "
                    f"functions.{window.function}.max_containers ({cap})")
        longest = max(getattr(self.functions, name).timeout for name in
                      ("render_video", "transcribe_audio", "generate_images"))
        if self.retention.blobs_days * 86400 < 2 * longest:
            problems.append(f"retention.blobs_days: {self.retention.blobs_days:g} days is "
                            f"shorter than twice the longest function timeout ({longest} s): "
                            "a job's inputs could go while it runs")
        if problems:
            raise ValueError("\n".join(problems))
        return self


@dataclass(frozen=True)
class Config:
    """Validated settings plus where each leaf value came from."""

    settings: Settings
    path: Path | None
    sources: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, Any, str]]:
        """``(key path, value, source)`` for every leaf, in a stable order."""
        flat = _flatten(self.settings.model_dump())
        return [(key, value, self.sources.get(key, "default")) for key, value in flat.items()]


# ---------------------------------------------------------------------------------------
# Loading


def find_config(start: Path | None = None) -> Path | None:
    """The nearest ``modal.toml`` in ``start`` (default: cwd) or one of its parents."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return None


def load_config(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    search: bool = True,
) -> Config:
    """Read, merge and validate the config.

    ``path``: an explicit file (``--config`` / ``CANVASCAST_CONFIG``); it must exist.
    Without it the nearest ``modal.toml`` is used when ``search`` is true.
    ``overrides``: dotted key path -> value, from command-line flags.

    Every layer is merged key by key over the built-in defaults, so a table that sets one
    key keeps the defaults of the others, and the effective values are what is validated.
    """
    env = os.environ if env is None else env
    if path is None and env.get(ENV_CONFIG):
        path = env[ENV_CONFIG]
    config_path: Path | None
    if path is not None:
        config_path = Path(path).expanduser()
        if not config_path.is_file():
            what = "is a folder, not a file" if config_path.is_dir() else "not found"
            raise ConfigError(f"{config_path}: config file {what}")
    else:
        config_path = find_config() if search else None

    raw: dict[str, Any] = Settings().model_dump()
    sources: dict[str, str] = {}
    problems: list[str] = []

    if config_path is not None:
        _merge(raw, _read_toml(config_path), sources, str(config_path))

    env_data, env_sources, env_problems = _env_overrides(env)
    problems += env_problems
    _merge(raw, env_data, sources, None, explicit_sources=env_sources)

    if overrides:
        nested: dict[str, Any] = {}
        for dotted, value in overrides.items():
            _set_path(nested, dotted.split("."), value)
        _merge(raw, nested, sources, "flag")

    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += _describe(exc, sources, config_path)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise ConfigError(f"{_where(problems, config_path)}: {len(problems)} {noun}",
                          details=problems)
    return Config(settings=settings, path=config_path, sources=sources)


def _where(problems: list[str], config_path: Path | None) -> str:
    """What the error is headed with: the file only when a problem is in the file."""
    if config_path is not None and any(p.startswith(f"{config_path}:") for p in problems):
        return str(config_path)
    if all(p.startswith(ENV_PREFIX) or p.startswith("env ") for p in problems):
        return f"environment ({ENV_PREFIX}*)"
    return "configuration"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")  # a UTF-8 byte order mark is harmless
    except UnicodeDecodeError:
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        hint = (" (it is UTF-16, which PowerShell's `>` writes; save it as UTF-8, e.g. "
                "`Set-Content -Encoding utf8`)" if utf16 else "")
        raise ConfigError(f"{path}: not UTF-8 text{hint}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """``CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOUT=900`` -> functions.render_video.timeout.

    Only names with a ``__`` are config keys; the others (CANVASCAST_JSON, ...) are global
    options. Each value is parsed by its key's type: text keys take the text as written
    (``CANVASCAST_APP__NAME=123`` is the name "123"), numbers and booleans are parsed as
    such, lists and tables as TOML literals.
    """
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    known = set(_flatten(Settings().model_dump(), lists_are_leaves=True))
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
        is_pricing_gpu = dotted.startswith("pricing.gpu_second.")
        if dotted not in known and not is_pricing_gpu:
            parent = dotted.rsplit(".", 1)[0]
            siblings = sorted(k.rsplit(".", 1)[1] for k in known if k.rsplit(".", 1)[0] == parent)
            hint = f"; allowed in {parent}: {', '.join(siblings)}" if siblings else ""
            problems.append(f"{name} (environment): no config key {dotted}{hint}")
            continue
        if is_pricing_gpu:
            # GPU names are upper case with dashes (A100-80GB): keep the name as written.
            raw_key = name[len(ENV_PREFIX):].split("__", 2)[2]
            dotted = "pricing.gpu_second." + raw_key.replace("_", "-")
        try:
            value = _parse_env_value(env[name], _key_type(dotted))
        except ValueError as exc:
            problems.append(f"env {name}: {dotted}: {exc}")
            continue
        _set_path(data, dotted.split("."), value)
        sources[dotted] = f"env {name}"
    return data, sources, problems


def _key_type(dotted: str) -> Any:
    """The annotation of the setting at ``dotted`` (``float`` for a GPU price)."""
    if dotted.startswith("pricing.gpu_second."):
        return float
    model: Any = Settings
    annotation: Any = None
    for part in dotted.split("."):
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return None
        annotation = info.annotation
        model = annotation
    return annotation


def _parse_env_value(text: str, annotation: Any) -> Any:
    """``text`` as a value of type ``annotation``; ValueError says what was expected."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    base = args[0] if optional and len(args) == 1 else annotation
    if optional and not text.strip():
        return None
    # A union with a Literal ([render] split: a number or "auto"): the literal as is.
    if text.strip() in [v for a in args if typing.get_origin(a) is Literal
                        for v in typing.get_args(a)]:
        return text.strip()
    if base is str or typing.get_origin(base) is Literal:
        return text
    if base is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a boolean; use true or false")
    if base is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if base is float:
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a finite number")
        return number
    try:  # lists and tables: a TOML literal
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ValueError(f"{text!r} is not a TOML value of the expected type (a list or "
                         "inline table, e.g. [\"mon\", \"tue\"])") from None


def _merge(
    into: dict[str, Any],
    data: Mapping[str, Any],
    sources: dict[str, str],
    source: str | None,
    *,
    explicit_sources: Mapping[str, str] | None = None,
    prefix: str = "",
) -> None:
    """Merge ``data`` into ``into`` key by key: tables merge, other values replace."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, sources, source, explicit_sources=explicit_sources,
                   prefix=dotted + ".")
            continue
        into[key] = dict(value) if isinstance(value, Mapping) else value
        label = explicit_sources.get(dotted) if explicit_sources else source
        sources[dotted] = label or "default"


def _set_path(target: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _flatten(
    data: Mapping[str, Any], prefix: str = "", *, lists_are_leaves: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not dotted.startswith("pricing.gpu_second."):
            out.update(_flatten(value, dotted + ".", lists_are_leaves=lists_are_leaves))
        else:
            out[dotted] = value
    return out


def _describe(exc: ValidationError, sources: Mapping[str, str], path: Path | None) -> list[str]:
    """One line per pydantic error: origin, key path, what is wrong and what is allowed."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        dotted = ".".join(loc)
        origin = _origin(dotted, sources, path)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            message = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif err["type"] not in ("value_error", "missing") and "input" in err:
            message += f" (got {err['input']!r})"
        if not dotted:  # a model-level check: one line per problem, each with its key
            for part in message.splitlines():
                key = re.sub(r"\[\d+\]", "", part.split(":", 1)[0])
                lines.append(f"{_origin(key, sources, path)}: {part}")
            continue
        lines.append(f"{origin}: {dotted}: {message}")
    return lines


def _origin(dotted: str, sources: Mapping[str, str], path: Path | None) -> str:
    """Where the value at ``dotted`` came from; for a default value that clashes with a
    set one (``max_containers`` below a configured ``min_containers``), where the set one
    in the same table came from."""
    candidates = [dotted] + [k for k in sources if k.startswith(dotted + ".")]
    for key in candidates:
        if key in sources:
            return sources[key]
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the nearest enclosing key or table set
        table = ".".join(parts[:cut])
        if table in sources:
            return sources[table]
        siblings = [source for key, source in sources.items() if key.startswith(table + ".")]
        if siblings:
            return siblings[0]
    return "defaults"


def _allowed_keys(loc: Iterable[str]) -> list[str]:
    model: Any = Settings
    for part in loc:
        if part.isdigit():
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type)
                      and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def function_cost_per_second(settings: Settings, function: FunctionName) -> float:
    """What one second of ``function`` costs on Modal with the configured resources.

    Used for the estimate printed before a remote run and for the "would have cost" line
    of a local run. Unset CPU/memory count as Modal's minimum reservation (0.125 core,
    128 MiB).
    """
    fn: FunctionConfig = getattr(settings.functions, function)
    pricing = settings.pricing
    rate = (fn.cpu or 0.125) * pricing.cpu_core_second
    rate += (fn.memory or 128) / 1024 * pricing.memory_gib_second
    if fn.gpu:
        match = _GPU_RE.match(fn.gpu)
        assert match is not None  # validated
        gpu_type = match["type"].upper()
        count = int(match["count"] or 1)
        rate += count * pricing.gpu_second.get(gpu_type, 0.0)
    return rate
