"""``modal.toml`` -> the keyword arguments of ``@app.function(...)``.

Kept free of ``import modal`` so it can be tested (and used by ``canvascast config``)
anywhere. Names follow Modal 1.x: ``min_containers``/``max_containers``/
``scaledown_window`` (the seed's ``keep_warm``/``concurrency_limit``/
``container_idle_timeout`` are gone from the SDK).
"""

from __future__ import annotations

from typing import Any

from canvascast_cli.config import FunctionConfig, FunctionName, Settings


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
    if fn.startup_timeout is not None:
        options["startup_timeout"] = fn.startup_timeout
    return options
