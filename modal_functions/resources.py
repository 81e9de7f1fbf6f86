"""``modal.toml`` -> the keyword arguments of ``@app.function(...)``, and the effective
settings written back out as TOML (the copy each Modal image carries).

Kept free of ``import modal`` so it can be tested (and used by ``canvascast config``)
anywhere. Names follow Modal 1.x: ``min_containers``/``max_containers``/
``scaledown_window`` (the seed's ``keep_warm``/``concurrency_limit``/
``container_idle_timeout`` are gone from the SDK).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from canvascast_cli.config import FunctionConfig, FunctionName, Settings

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# The warm-pool reconciler (``reconcile_warm_pools``, only with [[warm.windows]]): a few
# bounded autoscaler updates per run, on the smallest container, never retried (the next
# scheduled run heals a failed one).
RECONCILER = "reconcile_warm_pools"
RECONCILER_OPTIONS: dict[str, Any] = {"cpu": 0.125, "memory": 256, "timeout": 120,
                                      "retries": 0}


def function_options(settings: Settings, name: FunctionName) -> dict[str, Any]:
    """Decorator arguments for Modal function ``name``; unset resources are left out so
    Modal applies its own defaults."""
    fn: FunctionConfig = getattr(settings.functions, name)
    options: dict[str, Any] = {
        "timeout": fn.timeout,
        "retries": fn.retries,
        "min_containers": fn.min_containers,
        "max_containers": fn.max_containers,
        "scaledown_window": fn.scaledown_window,
    }
    if fn.gpu is not None:
        options["gpu"] = fn.gpu
    if fn.cpu is not None:
        options["cpu"] = fn.cpu
    if fn.memory is not None:
        options["memory"] = fn.memory
    if fn.buffer_containers is not None:
        options["buffer_containers"] = fn.buffer_containers
    if fn.startup_timeout is not None:
        options["startup_timeout"] = fn.startup_timeout
    return options


def settings_toml(settings: Settings) -> str:
    """``settings`` as a complete ``modal.toml``: every value, defaults included, so that
    ``load_config`` of the text gives the same settings whatever the defaults of the code
    reading it. TOML has no null: an unset value (``None``) is left out, which reads back
    as the default; ``modal_functions.images`` checks the round trip."""
    lines = ["# canvascast's effective settings, written at deploy time "
             "(modal_functions/images.py)"]
    _table(lines, [], settings.model_dump(mode="json"))
    return "\n".join(lines) + "\n"


def _table(lines: list[str], path: list[str], data: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_tables(v)}
    if path and (scalars or not data):
        lines += ["", f"[{'.'.join(_key(p) for p in path)}]"]
    for key, value in scalars.items():
        if value is not None:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            _table(lines, [*path, key], value)
        elif _is_tables(value):
            for item in value:
                lines += ["", f"[[{'.'.join(_key(p) for p in [*path, key])}]]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items() if v is not None]


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # A JSON string without ASCII escaping is a TOML basic string: the same escapes
        # (\\" \\\\ \\n \\uXXXX ...), and no surrogate pairs.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}: {value!r}")
