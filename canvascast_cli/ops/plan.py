"""What ``canvascast deploy`` will ask Modal for: the plan, from modal.toml alone.

``build_plan`` is a pure function of the settings: each job function's row is made from
``modal_functions.resources.function_options`` — the very keyword arguments the
``@app.function(...)`` decorators in ``modal_functions/app.py`` are given — so the plan
shown is what Modal gets. Beside them: the web function ``api``, the Volume, the Secrets
the app and its image builds name, the warm-pool reconciler's schedule (when
``[[warm.windows]]`` exist), each image's pinned packages, and what the warm containers
(``min_containers``) cost while idle, per hour and per day.

``image_packages`` reads the pins from ``requirements.lock`` the way
``modal_functions.images`` builds the images (it imports that module, hence Modal's SDK:
call it only where the SDK is installed); ``build_plan`` takes the result as an argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic.dataclasses import dataclass

from canvascast_cli.config import FunctionName, Settings, function_cost_per_second
from canvascast_cli.records import Usd
from modal_functions.resources import RECONCILER, RECONCILER_OPTIONS, function_options

JOB_FUNCTIONS: tuple[FunctionName, ...] = ("render_video", "transcribe_audio",
                                           "generate_images")
WEB_FUNCTION = "api"
# Which image each function runs in (modal_functions/app.py).
IMAGE_OF = {"render_video": "render", "transcribe_audio": "whisper",
            "generate_images": "images", WEB_FUNCTION: "web", RECONCILER: "web"}
API_SECRET = "canvascast-api"  # modal_functions/app.py (a test checks the two agree)
STORAGE_SECRET = "canvascast-storage"  # modal_functions/app.py, with [storage] supabase
HF_SECRET = "huggingface-secret"  # modal_functions/image_gen.py, for the images build
HOUR = 3600
DAY = 86400


@dataclass(frozen=True, kw_only=True)
class FunctionPlan:
    """One Modal function as it will be deployed. The job functions' values are
    modal.toml's; the web function's resources are Modal's defaults (None here)."""

    name: str
    image: str
    gpu: str | None = None
    cpu: float | None = None
    memory: int | None = None  # MiB
    timeout: int | None = None
    startup_timeout: int | None = None
    retries: int | None = None
    min_containers: int | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window: int | None = None
    secrets: list[str]
    rate_per_second: Usd | None = None  # USD a running container costs
    idle_cost_per_hour: Usd = 0.0  # USD the warm containers cost while idle
    idle_cost_per_day: Usd = 0.0
    options: dict[str, Any]  # the decorator's keyword arguments, as given


@dataclass(frozen=True, kw_only=True)
class SchedulePlan:
    """The warm-pool reconciler: runs on ``cron`` in ``timezone`` while windows exist."""

    function: str
    cron: str | None
    timezone: str
    windows: list[str]
    usd_per_week: Usd  # the warm containers the windows keep, idle, in a typical week
    usd_per_30_days: Usd


@dataclass(frozen=True, kw_only=True)
class ImagePlan:
    name: str
    functions: list[str]
    packages: list[str]  # name==version, from requirements.lock


@dataclass(frozen=True, kw_only=True)
class Plan:
    app: str
    environment: str | None
    volume: str
    secrets: list[str]
    functions: list[FunctionPlan]
    schedule: SchedulePlan | None
    images: list[ImagePlan]
    idle_cost_per_hour: Usd
    idle_cost_per_day: Usd


def build_plan(settings: Settings, *, environment: str | None = None,
               images: Mapping[str, Sequence[str]] | None = None,
               cron: str | None = None) -> Plan:
    """The deploy of ``settings``: ``environment`` is Modal's (None: the profile's),
    ``images`` each image's pins (``image_packages()``), ``cron`` the reconciler's
    schedule (None: ``schedule_cron(settings)``)."""
    functions = []
    # With [storage] provider = "supabase" the job functions upload from their containers.
    storage = [STORAGE_SECRET] if settings.storage.provider == "supabase" else []
    for name in JOB_FUNCTIONS:
        options = function_options(settings, name)
        rate = function_cost_per_second(settings, name)
        warm = int(options["min_containers"])
        functions.append(FunctionPlan(
            name=name, image=IMAGE_OF[name], gpu=options.get("gpu"), cpu=options.get("cpu"),
            memory=options.get("memory"), timeout=options["timeout"],
            startup_timeout=options.get("startup_timeout"), retries=options["retries"],
            min_containers=warm, max_containers=options["max_containers"],
            buffer_containers=options.get("buffer_containers"),
            scaledown_window=options["scaledown_window"], secrets=storage,
            rate_per_second=rate, idle_cost_per_hour=warm * rate * HOUR,
            idle_cost_per_day=warm * rate * DAY, options=options))
    functions.append(FunctionPlan(name=WEB_FUNCTION, image=IMAGE_OF[WEB_FUNCTION],
                                  secrets=[API_SECRET], options={}))
    schedule = None
    if settings.warm.windows:
        from canvascast_cli.ops.windows import MONTH_WEEKS, functions_with_windows, weekly_cost

        costs = [weekly_cost(settings, fn) for fn in functions_with_windows(settings)]
        options = dict(RECONCILER_OPTIONS)
        functions.append(FunctionPlan(
            name=RECONCILER, image=IMAGE_OF[RECONCILER], cpu=options["cpu"],
            memory=options["memory"], timeout=options["timeout"], retries=options["retries"],
            secrets=[], options=options))
        schedule = SchedulePlan(
            function=RECONCILER, cron=cron if cron is not None else schedule_cron(settings),
            timezone=settings.warm.timezone,
            windows=[f"{w.function} {','.join(w.days)} {w.start}-{w.end} "
                     f"min_containers={w.min_containers}" for w in settings.warm.windows],
            usd_per_week=sum(c.usd for c in costs),
            usd_per_30_days=sum(c.usd for c in costs) * MONTH_WEEKS)
    by_image: dict[str, list[str]] = {}
    for fn in functions:
        by_image.setdefault(fn.image, []).append(fn.name)
    image_plans = [ImagePlan(name=name, functions=names,
                             packages=list((images or {}).get(name, ())))
                   for name, names in by_image.items()]
    return Plan(
        app=settings.app.name,
        environment=environment if environment is not None else settings.app.environment,
        volume=settings.app.volume, secrets=[API_SECRET, HF_SECRET, *storage],
        functions=functions,
        schedule=schedule, images=image_plans,
        idle_cost_per_hour=sum(f.idle_cost_per_hour for f in functions),
        idle_cost_per_day=sum(f.idle_cost_per_day for f in functions))


def schedule_cron(settings: Settings) -> str | None:
    """The reconciler's cron expression (``ops.windows``), read in ``[warm] timezone``."""
    from canvascast_cli.ops.windows import cron_expression

    return cron_expression(settings)


def image_packages() -> dict[str, list[str]]:
    """Each image's pinned packages (``name==version``), as ``build_images`` installs
    them: the base's ``CORE`` pins, then the image's own. Imports Modal's SDK."""
    from modal_functions import images as built

    lock = built.Lock.read(built.LOCK_FILE)
    own = {"render": built.RENDER, "whisper": (*built.TRANSCRIBE, *built.CUDA_LIBS),
           "images": built.IMAGES, "web": (*built.RENDER, *built.WEB)}
    core = lock.pins(*built.CORE)
    return {name: sorted(set(core) | set(lock.pins(*names))) for name, names in own.items()}


def plan_rows(plan: Plan) -> list[tuple[str, ...]]:
    """The plan's functions as table rows (the terminal's view, ``PLAN_COLUMNS``)."""
    def text(value: Any) -> str:
        return "-" if value is None else str(value)

    rows: list[tuple[str, ...]] = []
    for fn in plan.functions:
        resources = [part for part in (fn.gpu, f"{fn.cpu:g} CPU" if fn.cpu else None,
                                       f"{fn.memory}M" if fn.memory else None) if part]
        timeout = text(fn.timeout) + (f" ({fn.startup_timeout})" if fn.startup_timeout
                                      else "")
        containers = (f"{fn.min_containers}/{fn.max_containers}/"
                      f"{text(fn.buffer_containers)}" if fn.max_containers else "-")
        rows.append((fn.name, fn.image, ", ".join(resources) or "default", timeout,
                     text(fn.retries), containers, text(fn.scaledown_window),
                     f"{fn.idle_cost_per_hour:.2f}" if fn.min_containers else "-"))
    return rows


# timeout: seconds per attempt (a container's start); resources: memory in MiB;
# containers: min/max/buffer; idle $/h: what the min_containers cost doing nothing.
PLAN_COLUMNS = ("function", "image", "resources", "timeout s", "retries", "containers",
                "scaledown s", "idle $/h")
