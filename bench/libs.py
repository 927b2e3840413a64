"""The library adapters live in the package now (``matry.bench._adapters``, so that
``matry bench`` runs them from an install); this name keeps old imports working."""

from __future__ import annotations

from matry.bench._adapters import (
    ADAPTERS,
    ALIASES,
    DEFAULT_NAMES,
    LIBRARY_NAMES,
    LOAD,
    MMAP,
    USER_NAMES,
    LibraryAdapter,
    make_adapter,
    resolve_libraries,
)

__all__ = [
    "ADAPTERS",
    "ALIASES",
    "DEFAULT_NAMES",
    "LIBRARY_NAMES",
    "LOAD",
    "MMAP",
    "USER_NAMES",
    "LibraryAdapter",
    "make_adapter",
    "resolve_libraries",
]
