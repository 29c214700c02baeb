"""Validated names: what a collection or a tenant may be called.

A collection name becomes a directory under the data directory (Qdrant Edge) or a collection on
a server, so it must never carry a path: no ``/``, no ``..``, no NUL, a bounded length. Every
request schema, CLI flag and index adapter uses :data:`CollectionName` / :func:`check_collection`,
so a name is refused before anything touches the disk.

Example::

    check_collection("kb")          # "kb"
    check_collection("../etc")      # raises InvalidName
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = "1–64 characters of letters, digits, '_', '.' or '-', not starting with '.' or '-'"

CollectionName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
TenantName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

DEFAULT_TENANT = "default"


class InvalidName(ValueError):
    """A collection or tenant name that is not a plain identifier."""


def is_plain_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_collection(name: str) -> str:
    """``name`` if it is a plain identifier; else :class:`InvalidName` (never echoes a path)."""
    if not is_plain_name(name):
        raise InvalidName(f"invalid collection name: use {NAME_RULE}")
    return name


def check_tenant(name: str) -> str:
    if not is_plain_name(name):
        raise InvalidName(f"invalid tenant name: use {NAME_RULE}")
    return name
