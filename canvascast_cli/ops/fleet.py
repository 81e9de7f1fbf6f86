"""Modal's live side of the warm pools, through the SDK, every call bounded in time.

    settings  fn.autoscaler.settings()     the autoscaler as Modal runs it (overrides in)
    stats     fn.get_current_stats()       live runners and backlog
    update    fn.autoscaler.update(...)    an override (``update_autoscaler`` is deprecated)
    ping      fn.remote(PING_PAYLOAD)      one minimal invocation: latency, cold or warm
    web_url   api.get_web_url()            the job API's URL after a deploy
    published / publish_override
              the app's progress Dict, OVERRIDES_KEY: the operators' overrides, shared by
              every machine (``warm set`` anywhere, the reconciler, a deploy from CI)

With a token but no network the SDK waits ~60 s per call before it gives up; every call
here is ``asyncio.wait_for(... .aio(...), timeout)`` on the fleet's own event loop, so an
unreachable Modal is ``ModalUnavailable`` (exit 3) within ``timeout`` seconds. No token
at all is ``ops.access.require_credentials``'s exit 2, before any call.

``Fleet`` is the interface the commands use; ``ModalFleet`` is Modal's, and tests pass a
fake that records the calls (the names it calls are checked against the installed
``modal`` by a test). ``import modal`` happens in the constructor, never at import.
Inside a Modal container (the warm-pool reconciler) the SDK uses the container's own
identity: no token is needed there.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from pydantic.dataclasses import dataclass

from canvascast_cli.errors import CanvasCastError, InvalidInput, ModalUnavailable, NotFound
from canvascast_cli.records import Seconds

T = TypeVar("T")

CALL_TIMEOUT = 5.0  # seconds one SDK call may take before Modal counts as unreachable
OVERRIDES_KEY = "warm:overrides"  # in the app's progress Dict: {function: {setting: value}}
AUTOSCALER_FIELDS = ("min_containers", "max_containers", "buffer_containers",
                     "scaledown_window")



@dataclass(frozen=True, kw_only=True)
class Autoscaler:
    """Modal's four autoscaler settings of one function; None: not given (an override
    leaves it as deployed; a live reading did not have it)."""

    min_containers: int | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window: int | None = None

    def given(self) -> dict[str, int]:
        """The settings that are set, as ``fn.autoscaler.update(**...)`` takes them."""
        values = {name: getattr(self, name) for name in AUTOSCALER_FIELDS}
        return {name: value for name, value in values.items() if value is not None}

    def over(self, base: Autoscaler) -> Autoscaler:
        """``base`` with this one's settings on top."""
        return Autoscaler(**{**base.given(), **self.given()})


@dataclass(frozen=True, kw_only=True)
class PoolStats:
    """A function's containers right now: ``runners`` live, ``backlog`` inputs waiting."""

    runners: int
    backlog: int
    running_inputs: int = 0


@dataclass(frozen=True, kw_only=True)
class Ping:
    """One minimal invocation: the round trip, and what the container said of itself."""

    function: str
    latency: Seconds
    cold_start: bool | None
    container_id: str | None = None
    startup_seconds: Seconds | None = None


class Fleet(Protocol):
    def settings(self, function: str) -> Autoscaler: ...

    def stats(self, function: str) -> PoolStats: ...

    def update(self, function: str, settings: Autoscaler) -> Autoscaler: ...

    def ping(self, function: str, timeout: float) -> Ping: ...

    def web_url(self, function: str) -> str | None: ...

    def published_overrides(self) -> dict[str, Autoscaler]: ...

    def publish_override(self, function: str, settings: Autoscaler | None) -> None: ...

    def close(self) -> None: ...


class ModalFleet:
    """``Fleet`` over Modal's SDK for the deployed app ``app_name``."""

    def __init__(self, app_name: str, *, environment: str | None = None,
                 timeout: float = CALL_TIMEOUT, sdk: Any = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.app_name = app_name
        self.environment = environment
        self.timeout = timeout
        if sdk is None:
            try:
                sdk = importlib.import_module("modal")
            except ImportError:
                raise InvalidInput("this needs Modal's SDK: pip install 'canvascast[modal]'"
                                   ) from None
        self._sdk = sdk
        self._loop = asyncio.Runner()
        self._functions: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> ModalFleet:
        return cls(settings.app.name, environment=settings.app.environment, **options)

    def __repr__(self) -> str:
        return f"ModalFleet({self.app_name!r}, environment={self.environment!r})"

    def close(self) -> None:
        self._loop.close()

    def settings(self, function: str) -> Autoscaler:
        live = self._run(self._fn(function).autoscaler.settings.aio(),
                         f"read {function}'s autoscaler")
        return Autoscaler(**{name: getattr(live, name, None) for name in AUTOSCALER_FIELDS})

    def stats(self, function: str) -> PoolStats:
        live = self._run(self._fn(function).get_current_stats.aio(),
                         f"read {function}'s containers")
        return PoolStats(runners=int(live.num_total_runners), backlog=int(live.backlog),
                         running_inputs=int(getattr(live, "num_running_inputs", 0) or 0))

    def update(self, function: str, settings: Autoscaler) -> Autoscaler:
        given = settings.given()
        if not given:
            raise ValueError("an autoscaler update needs at least one setting")
        live = self._run(self._fn(function).autoscaler.update.aio(**given),
                         f"update {function}'s autoscaler")
        return Autoscaler(**{name: getattr(live, name, None) for name in AUTOSCALER_FIELDS})

    def ping(self, function: str, timeout: float) -> Ping:
        from canvascast_cli.protocol import PING_PAYLOAD, PingReply

        began = time.perf_counter()
        raw = self._run(self._fn(function).remote.aio(dict(PING_PAYLOAD)), f"ping {function}",
                        timeout=timeout)
        latency = time.perf_counter() - began
        reply = PingReply.model_validate(raw)
        return Ping(function=function, latency=latency, cold_start=reply.cold_start,
                    container_id=reply.container_id, startup_seconds=reply.startup_seconds)

    def web_url(self, function: str) -> str | None:
        url = self._run(self._fn(function).get_web_url.aio(), f"read {function}'s URL")
        return str(url) if url else None

    def published_overrides(self) -> dict[str, Autoscaler]:
        """The overrides operators published (``warm set`` on any machine): what the
        reconciler keeps and a deploy applies again. Entries that cannot be read are
        skipped (``parse_overrides``)."""
        raw = self._run(self._overrides_store().get.aio(OVERRIDES_KEY),
                        "read the warm-pool overrides")
        return parse_overrides(raw)[0]

    def publish_override(self, function: str, settings: Autoscaler | None) -> None:
        """Set (None: drop) ``function``'s entry among the published overrides, leaving
        the other functions' entries as they are."""
        store = self._overrides_store()
        current = parse_overrides(self._run(store.get.aio(OVERRIDES_KEY),
                                            "read the warm-pool overrides"))[0]
        if settings is None:
            current.pop(function, None)
        else:
            current[function] = settings
        value = {name: entry.given() for name, entry in sorted(current.items())}
        self._run(store.put.aio(OVERRIDES_KEY, value), "publish the warm-pool overrides")

    # -----------------------------------------------------------------------------------

    def _overrides_store(self) -> Any:
        from canvascast_cli.protocol.modal_calls import progress_dict_name

        return self._sdk.Dict.from_name(progress_dict_name(self.app_name),
                                        environment_name=self.environment,
                                        create_if_missing=True)

    def _fn(self, function: str) -> Any:
        if function not in self._functions:  # a lazy handle: no network until used
            self._functions[function] = self._sdk.Function.from_name(
                self.app_name, function, environment_name=self.environment)
        return self._functions[function]

    def _run(self, coro: Coroutine[Any, Any, T], doing: str, *,
             timeout: float | None = None) -> T:
        from canvascast_cli.protocol.modal_calls import to_canvascast

        seconds = self.timeout if timeout is None else timeout

        async def bounded() -> T:
            return await asyncio.wait_for(coro, seconds)

        try:
            return self._loop.run(bounded())
        except TimeoutError:
            raise ModalUnavailable(
                f"{doing}: Modal did not answer within {seconds:g} s (unreachable, or the "
                "network is down)") from None
        except CanvasCastError:
            raise
        except Exception as exc:
            if type(exc).__name__ == "NotFoundError":  # modal.exception.NotFoundError
                raise NotFound(
                    f"{doing}: Modal has no deployed app {self.app_name!r} with that "
                    f"function{self._where()} (deploy it: canvascast deploy)") from None
            raise to_canvascast(exc, doing=doing) from None

    def _where(self) -> str:
        return f" in environment {self.environment!r}" if self.environment else ""


def parse_overrides(raw: Any) -> tuple[dict[str, Autoscaler], list[str]]:
    """The overrides kept under ``OVERRIDES_KEY`` (``{function: {field: value}}``, other
    keys in an entry ignored) and a line per entry that could not be read (skipped)."""
    if raw is None:
        return {}, []
    if not isinstance(raw, Mapping):
        return {}, [f"{OVERRIDES_KEY}: expected a table of functions, got "
                    f"{type(raw).__name__}"]
    found: dict[str, Autoscaler] = {}
    problems: list[str] = []
    for function, entry in raw.items():
        if not isinstance(entry, Mapping):
            problems.append(f"{OVERRIDES_KEY}: {function}: expected a table, got "
                            f"{type(entry).__name__}")
            continue
        values = {k: entry[k] for k in AUTOSCALER_FIELDS if entry.get(k) is not None}
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values.values()):
            problems.append(f"{OVERRIDES_KEY}: {function}: not whole numbers: {values}")
            continue
        try:
            found[str(function)] = Autoscaler(**values)
        except (TypeError, ValueError) as exc:
            problems.append(f"{OVERRIDES_KEY}: {function}: {exc}")
    return found, problems
