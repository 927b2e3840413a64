"""Exceptions raised by matry."""

from __future__ import annotations

from ._core import CorruptIndexError


class ContractError(ValueError):
    """Vectors that do not fit the embedding contract of an index or collection.

    Raised for a dimension mismatch, non-unit vectors under ``metric="ip"``, vectors made by
    another encoder (fingerprint mismatch), or document vectors used as queries where the model
    distinguishes the two.
    """


__all__ = ["ContractError", "CorruptIndexError"]
