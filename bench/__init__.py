"""Side-by-side benchmarks of matry against hnswlib, Annoy, usearch, faiss and voyager.

Run ``python -m bench run --dataset glove-50 --libs matry,hnswlib`` from the repository root;
see bench/README.md.
"""

from __future__ import annotations
