"""Records that leave the process — ``--json``, the job API, the ledger — encoded one way.

A record is a frozen dataclass (standard or pydantic) or a pydantic model; ``dump``
turns any of them into JSON-ready data with pydantic, so field names, nesting and
rounding are decided by the record's type, once, and ``--json``, the wire format and the
ledger agree by construction. Rounding belongs to the kind of number, not to the caller:

    Seconds   a duration or a time,         to the millisecond      (3 decimals)
    Usd       money,                        to the nano-dollar      (9 decimals)
    Ratio     a share or a speed factor,    4 decimals

Values are kept exact in memory and in SQLite; only their encoding is rounded (so
``0.00047511284500000007`` USD prints as ``0.000475113``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import PlainSerializer, TypeAdapter


def _rounded(digits: int) -> PlainSerializer:
    return PlainSerializer(lambda value: round(float(value), digits), return_type=float)


Seconds = Annotated[float, _rounded(3)]
Usd = Annotated[float, _rounded(9)]
Ratio = Annotated[float, _rounded(4)]


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(kind: type) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter


def dump(record: Any, *, exclude_none: bool = False) -> Any:
    """``record`` as JSON-ready data (dicts, lists, str, numbers, bools, None)."""
    return _adapter(type(record)).dump_python(record, mode="json", by_alias=True,
                                              exclude_none=exclude_none)


def dumps(record: Any, *, indent: int | None = 2) -> str:
    """``record`` as a JSON document (the ``--json`` output of a command)."""
    data = record if isinstance(record, dict | list) else dump(record)
    return json.dumps(data, indent=indent, ensure_ascii=False, default=_fallback)


def _fallback(value: Any) -> Any:
    # Records nested in a plain dict (a command's result assembled from several).
    try:
        return dump(value)
    except Exception:
        return str(value)
