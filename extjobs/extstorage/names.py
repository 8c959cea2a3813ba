"""Names in the ExtStorage contract: actions, providers, parameters and volume metadata.

They are defined with the volume in :mod:`extjobs.model.volume` (the journal records
them too); this module is where the provider contract's code looks them up.
"""

from __future__ import annotations

from extjobs.model.volume import (
    METADATA_MAX_LEN,
    OPTIONAL_ACTIONS,
    PARAM_NAME_RE,
    PROVIDER_NAME_RE,
    REQUIRED_ACTIONS,
    RESERVED_PARAMS,
    Action,
    sanitize_metadata,
    validate_param_name,
    validate_provider_name,
)

__all__ = [
    "METADATA_MAX_LEN",
    "OPTIONAL_ACTIONS",
    "PARAM_NAME_RE",
    "PROVIDER_NAME_RE",
    "REQUIRED_ACTIONS",
    "RESERVED_PARAMS",
    "Action",
    "sanitize_metadata",
    "validate_param_name",
    "validate_provider_name",
]
