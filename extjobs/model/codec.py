"""Serialisation in one place: attrs model objects ⇄ JSON-ready dicts (no pickle).

Every structure that crosses a boundary (the store, the API) goes through
``CONVERTER``. Decoding errors are turned into :class:`InputError` naming the field.
Stored documents carry ``FORMAT_VERSION`` so that a later release can migrate them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import cattrs
import orjson
from cattrs.preconf.json import make_converter

from extjobs.errors import ExtJobsError, InputError

FORMAT_VERSION = 1

T = TypeVar("T")

CONVERTER = make_converter(forbid_extra_keys=True)
CONVERTER.register_unstructure_hook(Path, str)
CONVERTER.register_structure_hook(Path, lambda v, _t: Path(v))


def unstructure(obj: Any) -> Any:
    return CONVERTER.unstructure(obj)


def structure(data: Any, cls: type[T], *, what: str = "") -> T:
    """Decode ``data`` into ``cls``; raises InputError with the offending field's path."""
    try:
        return CONVERTER.structure(data, cls)
    except ExtJobsError:
        raise
    except cattrs.BaseValidationError as exc:
        errors = cattrs.transform_error(exc, path=what or "$")
        inner = _first_extjobs_error(exc)
        if inner is not None:
            raise inner from None
        field = errors[0].split(" @ ")[-1] if errors else what
        raise InputError("; ".join(errors), field=field) from None
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"invalid {what or 'value'}: {exc}", field=what) from None


def _first_extjobs_error(exc: BaseException) -> ExtJobsError | None:
    if isinstance(exc, ExtJobsError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _first_extjobs_error(sub)
            if found is not None:
                return found
    return None


def json_bytes(obj: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON, written by orjson (C): a job's document is written at each
    change of its status, and json's encoder was a tenth of the engine's CPU per job.
    What orjson refuses (an integer beyond 64 bits) goes through json."""
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(obj, option=option)
    except TypeError:
        text = json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False)
        return text.encode()


def dumps(obj: Any) -> str:
    """A stored document: compact JSON with sorted keys."""
    return json_bytes(obj, sort_keys=True).decode()


def loads(text: str) -> Any:
    return json.loads(text)
