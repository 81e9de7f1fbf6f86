"""What the operators' commands (``deploy``, ``warm``, ``status``, ``breaker``) share:
the state file, and Modal's live side of the warm pools (``ops.fleet``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canvascast_cli.cli.context import Application
from canvascast_cli.cli.remote import environ_of

if TYPE_CHECKING:
    from canvascast_cli.config import Settings
    from canvascast_cli.dispatch.state import StateDB
    from canvascast_cli.ops.fleet import Fleet


def open_fleet(application: Application, settings: Settings, doing: str, *,
               timeout: float | None = None) -> Fleet:
    """Modal's warm pools for modal.toml's app: the test's fake when one is set, else
    Modal's SDK after checking a token is configured (exit 2 naming the variables)."""
    factory = application.services.fleet
    if factory is not None:
        fleet: Fleet = factory(settings)
        return fleet
    from canvascast_cli.ops.access import require_credentials
    from canvascast_cli.ops.fleet import CALL_TIMEOUT, ModalFleet

    require_credentials(environ_of(application), doing)
    return ModalFleet.from_settings(settings, timeout=timeout or CALL_TIMEOUT)


def fleet_available(application: Application) -> bool:
    """Whether Modal can be asked at all (a fake fleet, or a token configured)."""
    if application.services.fleet is not None:
        return True
    from canvascast_cli.ops.access import has_credentials

    return has_credentials(environ_of(application))


def state_db() -> StateDB:
    """The state file (``CANVASCAST_HOME`` moves it)."""
    from canvascast_cli.dispatch.state import StateDB

    return StateDB()
