"""Framework adapters, each behind its own extra and imported only when asked for.

- :mod:`matry.integrations.langchain`: ``MatryVectorStore``, a LangChain ``VectorStore`` on a
  matry index (``pip install 'matry[langchain]'``).

Importing this package imports no framework: ``import matry.integrations.langchain`` does.
"""

from __future__ import annotations
