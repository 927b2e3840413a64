"""LangChain's own standard suite for vector stores, run against MatryVectorStore.

``VectorStoreIntegrationTests`` (from the ``langchain-tests`` package) checks empty stores,
adding with and without ids, upserts, deletes, ``get_by_ids`` and search order, sync and async
(the async ones through LangChain's default executor wrappers, under pytest-asyncio's auto mode
set in pyproject.toml).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

if sys.version_info < (3, 10):  # langchain-core 1.x needs Python 3.10+
    pytest.skip("langchain-core needs Python 3.10 or newer", allow_module_level=True)

from langchain_tests.integration_tests import VectorStoreIntegrationTests
from matry.integrations.langchain import MatryVectorStore


class TestMatryVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self) -> Iterator[MatryVectorStore]:  # type: ignore[override]
        store = MatryVectorStore(embedding=self.get_embeddings())
        try:
            yield store
        finally:
            store.delete()
