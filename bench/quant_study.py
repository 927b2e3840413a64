"""Which int8 scalar quantizer and which query-side scheme should compressed traversal use?

A pure-numpy study of code fidelity: no graph, no timing. Every query is scored against every
base vector (brute force, base processed in chunks), once exactly in float64 and once per
configuration from the uint8 codes, so the recall numbers are the ceiling that a graph search
over the codes can reach (graph error comes on top of them).

Quantizers (one uint8 code per dimension, ``x_hat = m + s * (lo_i + step_i * c)``):

* ``sq8``: per-dimension affine over the base's min..max (``lo = 0``, ``step = 1``).
* ``sq8-clip``: the same over the 0.1..99.9 percentile range per dimension, codes clipped.
* ``lvq``: per-vector range of ``r = x - mu`` (``mu`` the base mean, ``s = 1``).
* ``lvq-nocenter``: per-vector range of ``x`` itself (``mu = 0``).

Query schemes:

* ``f32``: asymmetric, ``q . x_hat`` in float32 against the dequantized codes.
* ``int8``: ``w = q * s``, ``qa = max|w| / 127``, ``u = round(w / qa)`` in [-127, 127], and
  ``score = q . m + lo_i * sum(w) + step_i * qa * (u . c_i)``: the exact integer dot product
  (uint8 codes x int8 query) of the C++ kernel plus the per-node float corrections.

Measures per data set x configuration: recall@10 of the approximate top 10 against the exact
float64 top 10; recall@10 after rescoring the approximate top R exactly (float64); the mean
absolute error of the score against the exact dot product. Then the two best configurations on
minilm again on the first 128 dimensions after a PCA rotation (prefix cosine, rerank on the
full vector).

Run from the repository root (data sets are prepared once into the bench cache)::

    python -m bench.quant_study
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import datasets

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

DATASET_NAMES = (datasets.GLOVE_NAME, datasets.MINILM_NAME)
QUANTIZERS = ("sq8", "sq8-clip", "lvq", "lvq-nocenter")
SCHEMES = ("f32", "int8")
RERANK_DEPTHS = (10, 15, 20, 30, 40, 80)
PREFIX_RERANK_DEPTHS = (20, 40, 80, 160)
PREFIX_DIMS = 128
RECALL_TARGETS = (0.95, 0.99)
TOP = 10
CLIP_PERCENTILES = (0.1, 99.9)
CODE_MAX = 255
QUERY_MAX = 127
COLUMN_BLOCK = 32
# Exact scores closer than this to the 10th exact score are ties (duplicate vectors).
TIE_TOLERANCE = 1e-9
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "quantization"


# --------------------------------------------------------------------------- quantizers


@dataclass(frozen=True)
class Codes:
    """uint8 codes [n, d] and the per-vector corrections lo, step [n] (float32, as stored)."""

    codes: U8
    lo: F32
    step: F32

    def prefix(self, dims: int) -> Codes:
        """The first ``dims`` codes of each vector, corrections unchanged."""
        return Codes(np.ascontiguousarray(self.codes[:, :dims]), self.lo, self.step)


@dataclass(frozen=True)
class Quantizer:
    """``x_hat = m + s * (lo_i + step_i * c)``; per-dimension (SQ8) or per-vector (LVQ)."""

    name: str
    per_vector: bool
    m: F32
    s: F32

    def prefix(self, dims: int) -> Quantizer:
        """The same quantizer restricted to the first ``dims`` dimensions."""
        return Quantizer(
            self.name,
            self.per_vector,
            np.ascontiguousarray(self.m[:dims]),
            np.ascontiguousarray(self.s[:dims]),
        )

    def encode(self, block: F32) -> Codes:
        rows = block.shape[0]
        if not self.per_vector:
            scaled = (block - self.m) / self.s
            codes = np.clip(np.rint(scaled), 0, CODE_MAX).astype(np.uint8)
            return Codes(codes, np.zeros(rows, np.float32), np.ones(rows, np.float32))
        residual = block - self.m
        lo = residual.min(axis=1).astype(np.float32)
        step = ((residual.max(axis=1) - lo) / CODE_MAX).astype(np.float32)
        step = np.where(step > 0, step, np.float32(1.0)).astype(np.float32)
        scaled = (residual - lo[:, None]) / step[:, None]
        codes = np.clip(np.rint(scaled), 0, CODE_MAX).astype(np.uint8)
        return Codes(codes, lo, step)

    def decode(self, codes: Codes) -> F32:
        inner = codes.lo[:, None] + codes.step[:, None] * codes.codes.astype(np.float32)
        return (self.m + self.s * inner).astype(np.float32)


@dataclass(frozen=True)
class QueryState:
    """A batch of queries prepared for one quantizer: float and int8 forms."""

    q: F32
    u: F32  # int8 values -127..127 held in float32 (exact; see _check_int_dot_exact)
    qa: F32
    sum_w: F32
    const: F32

    @staticmethod
    def prepare(queries: F32, quantizer: Quantizer) -> QueryState:
        w = (queries * quantizer.s).astype(np.float32)
        peak = np.abs(w).max(axis=1)
        qa = np.where(peak > 0, peak / QUERY_MAX, np.float32(1.0)).astype(np.float32)
        u = np.clip(np.rint(w / qa[:, None]), -QUERY_MAX, QUERY_MAX).astype(np.float32)
        return QueryState(
            q=queries,
            u=u,
            qa=qa,
            sum_w=w.sum(axis=1, dtype=np.float32),
            const=(queries @ quantizer.m).astype(np.float32),
        )


def score_f32(state: QueryState, quantizer: Quantizer, codes: Codes, pairwise: bool) -> F32:
    """Asymmetric score ``q . x_hat`` (float32 query, dequantized codes)."""
    x_hat = quantizer.decode(codes)
    if pairwise:
        scores: F32 = np.einsum("ij,ij->i", state.q, x_hat).astype(np.float32)
        return scores
    return (state.q @ x_hat.T).astype(np.float32)


def score_int8(state: QueryState, codes: Codes, pairwise: bool) -> F32:
    """Quantized-query score: exact integer dot product plus per-node float corrections."""
    c = codes.codes.astype(np.float32)
    if pairwise:
        dot: F32 = np.einsum("ij,ij->i", state.u, c)
        scores: F32 = state.const + codes.lo * state.sum_w + codes.step * state.qa * dot
        return scores.astype(np.float32)
    dot = state.u @ c.T
    corrections = state.const[:, None] + state.sum_w[:, None] * codes.lo[None, :]
    scores = corrections + (state.qa[:, None] * codes.step[None, :]) * dot
    return scores.astype(np.float32)


def _check_int_dot_exact(state: QueryState, codes: Codes) -> None:
    """The float32 matmul of integer codes must equal the int64 dot product exactly."""
    dims = codes.codes.shape[1]
    if dims * CODE_MAX * QUERY_MAX >= 2**24:
        raise ValueError(f"{dims} dims: float32 cannot hold the integer dot product exactly")
    rows = min(256, codes.codes.shape[0])
    as_float = state.u[:16] @ codes.codes[:rows].astype(np.float32).T
    as_int = state.u[:16].astype(np.int64) @ codes.codes[:rows].astype(np.int64).T
    if not np.array_equal(as_float.astype(np.int64), as_int):
        raise AssertionError("float32 integer dot product differs from the int64 one")


# --------------------------------------------------------------------------- training

Transform = Callable[[F32], F32]


def _identity(block: F32) -> F32:
    return block


def iter_chunks(base: npt.NDArray[Any], chunk: int, transform: Transform) -> Iterator[F32]:
    for start in range(0, base.shape[0], chunk):
        yield transform(np.ascontiguousarray(base[start : start + chunk], dtype=np.float32))


def train(
    name: str, base: npt.NDArray[Any], chunk: int, transform: Transform = _identity
) -> Quantizer:
    """Fit a quantizer on the whole base (read in chunks, after ``transform``)."""
    if name in ("lvq", "lvq-nocenter"):
        dim = transform(np.asarray(base[:1], dtype=np.float32)).shape[1]
        mean = np.zeros(dim, np.float64)
        if name == "lvq":
            for block in iter_chunks(base, chunk, transform):
                mean += block.sum(axis=0, dtype=np.float64)
            mean /= base.shape[0]
        return Quantizer(name, True, mean.astype(np.float32), np.ones(dim, np.float32))
    if name == "sq8":
        low: F64 | None = None
        high: F64 | None = None
        for block in iter_chunks(base, chunk, transform):
            block_low = block.min(axis=0).astype(np.float64)
            block_high = block.max(axis=0).astype(np.float64)
            low = block_low if low is None else np.minimum(low, block_low)
            high = block_high if high is None else np.maximum(high, block_high)
        assert low is not None and high is not None
    elif name == "sq8-clip":
        low, high = _percentiles(base, chunk, transform)
    else:
        raise ValueError(f"unknown quantizer {name!r}")
    scale = (high - low) / CODE_MAX
    scale = np.where(scale > 0, scale, 1.0)
    return Quantizer(name, False, low.astype(np.float32), scale.astype(np.float32))


def _percentiles(base: npt.NDArray[Any], chunk: int, transform: Transform) -> tuple[F64, F64]:
    """Per-dimension 0.1 / 99.9 percentiles over the whole base, a block of columns at a time."""
    dim = transform(np.asarray(base[:1], dtype=np.float32)).shape[1]
    low = np.empty(dim, np.float64)
    high = np.empty(dim, np.float64)
    for first in range(0, dim, COLUMN_BLOCK):
        columns = slice(first, min(dim, first + COLUMN_BLOCK))
        values = np.concatenate(
            [block[:, columns] for block in iter_chunks(base, chunk, transform)]
        )
        low[columns], high[columns] = np.percentile(values, CLIP_PERCENTILES, axis=0)
    return low, high


# --------------------------------------------------------------------------- scan


@dataclass
class TopK:
    """Running top-``k`` (highest score first after ``finish``) per query."""

    k: int
    scores: F64
    ids: I64

    @staticmethod
    def empty(queries: int, k: int) -> TopK:
        return TopK(k, np.full((queries, 0), -np.inf), np.zeros((queries, 0), np.int64))

    def push(self, block_scores: npt.NDArray[Any], start: int) -> None:
        k = min(self.k, block_scores.shape[1])
        part = np.argpartition(-block_scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(block_scores, part, axis=1).astype(np.float64)
        scores = np.concatenate([self.scores, part_scores], axis=1)
        ids = np.concatenate([self.ids, part.astype(np.int64) + start], axis=1)
        if scores.shape[1] > self.k:
            keep = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]
            scores = np.take_along_axis(scores, keep, axis=1)
            ids = np.take_along_axis(ids, keep, axis=1)
        self.scores, self.ids = scores, ids

    def finish(self) -> tuple[I64, F64]:
        """(ids, scores) by descending score (ties: smaller id first)."""
        order = np.lexsort((self.ids, -self.scores), axis=1)
        return (
            np.take_along_axis(self.ids, order, axis=1),
            np.take_along_axis(self.scores, order, axis=1),
        )


# A scorer gets a base chunk as stored and after the scan's transform, and returns
# approximate scores [queries, chunk] per configuration name.
BlockScorer = Callable[[F32, F32], dict[str, F32]]


@dataclass
class ScanResult:
    exact_ids: I64  # [q, TOP + 1] exact float64 top ids (one more to detect ties)
    exact_sims: F64
    approx_ids: dict[str, I64]  # [q, depth] approximate ranking
    mae_all: dict[str, float]


def scan(
    base: npt.NDArray[Any],
    queries: F32,
    scorers: Sequence[BlockScorer],
    depth: int,
    chunk: int,
    transform: Transform = _identity,
    track_error: bool = True,
    label: str = "",
) -> ScanResult:
    """Brute-force pass over the base: exact top-TOP plus each configuration's top-``depth``.

    Each scorer sees the base chunk (as stored and transformed) and returns approximate
    scores [q, chunk] per configuration name.
    """
    queries64 = queries.astype(np.float64)
    exact = TopK.empty(queries.shape[0], TOP + 1)
    approx: dict[str, TopK] = {}
    error_sums: dict[str, float] = {}
    pairs = 0
    started = time.perf_counter()
    for index, start in enumerate(range(0, base.shape[0], chunk)):
        raw = np.ascontiguousarray(base[start : start + chunk], dtype=np.float32)
        exact_scores = queries64 @ raw.astype(np.float64).T
        exact.push(exact_scores, start)
        pairs += exact_scores.size
        block = transform(raw)
        for scorer in scorers:
            for name, scores in scorer(raw, block).items():
                approx.setdefault(name, TopK.empty(queries.shape[0], depth)).push(scores, start)
                if track_error:
                    error = float(np.abs(scores - exact_scores).sum())
                    error_sums[name] = error_sums.get(name, 0.0) + error
        if index % 8 == 0:
            done = min(base.shape[0], start + chunk)
            print(
                f"  {label} {done:,}/{base.shape[0]:,} rows "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    exact_ids, exact_sims = exact.finish()
    return ScanResult(
        exact_ids=exact_ids,
        exact_sims=exact_sims,
        approx_ids={name: top.finish()[0] for name, top in approx.items()},
        mae_all={name: total / pairs for name, total in error_sums.items()},
    )


def quantizer_scorer(
    quantizer: Quantizer,
    queries: F32,
    prefix: int | None = None,
    prefix_codes: str = "full",
) -> BlockScorer:
    """Scores of both query schemes for one quantizer over a base chunk.

    With ``prefix``, scores are the re-normalized prefix cosine
    ``dot(q[:p], x_hat[:p]) / (|q[:p]| |x[:p]|)`` (exact ``|x[:p]|``); codes come from the
    whole vector (``prefix_codes="full"``: LVQ's lo/step over all dims) or from the prefix
    alone (``"prefix"``).
    """
    dims = prefix if prefix is not None else queries.shape[1]
    scored = quantizer.prefix(dims)
    state = QueryState.prepare(np.ascontiguousarray(queries[:, :dims]), scored)
    query_norms = np.linalg.norm(queries[:, :dims].astype(np.float64), axis=1)
    checked = False

    def score(raw: F32, block: F32) -> dict[str, F32]:
        del raw  # scores come from the transformed chunk
        nonlocal checked
        if prefix is None:
            codes = quantizer.encode(block)
        elif prefix_codes == "full":
            codes = quantizer.encode(block).prefix(dims)
        else:
            codes = scored.encode(np.ascontiguousarray(block[:, :dims]))
        if not checked:
            _check_int_dot_exact(state, codes)
            checked = True
        results = {
            "f32": score_f32(state, scored, codes, pairwise=False),
            "int8": score_int8(state, codes, pairwise=False),
        }
        if prefix is not None:
            base_norms = np.linalg.norm(block[:, :dims].astype(np.float64), axis=1)
            denominator = query_norms[:, None] * base_norms[None, :]
            results = {
                key: (value / denominator).astype(np.float32) for key, value in results.items()
            }
        return {f"{quantizer.name}/{key}": value for key, value in results.items()}

    return score


def float_prefix_scorer(queries: F32, dims: int, name: str, transformed: bool) -> BlockScorer:
    """Unquantized prefix cosine (the truncation error alone), as a control."""
    query_prefix = queries[:, :dims].astype(np.float64)
    query_norms = np.linalg.norm(query_prefix, axis=1)

    def score(raw: F32, block: F32) -> dict[str, F32]:
        prefix = (block if transformed else raw)[:, :dims].astype(np.float64)
        dots = query_prefix @ prefix.T
        norms = query_norms[:, None] * np.linalg.norm(prefix, axis=1)[None, :]
        return {name: (dots / norms).astype(np.float32)}

    return score


# --------------------------------------------------------------------------- measures


def rerank_hits(
    base: npt.NDArray[Any], queries: F32, candidates: I64, exact_sims: F64, depth: int
) -> npt.NDArray[np.int64]:
    """Per query, true neighbours among the top TOP after rescoring ``depth`` candidates.

    Candidates are rescored exactly (float64) and the best TOP kept; a kept id counts when its
    exact score is at least the exact TOP-th score (less TIE_TOLERANCE), so duplicate vectors
    that tie with the TOP-th neighbour count whichever id the ground truth happened to keep.
    ``depth = TOP`` is recall@TOP without rerank (the rescoring only reorders).
    """
    queries64 = queries.astype(np.float64)
    hits = np.zeros(queries.shape[0], np.int64)
    for row in range(queries.shape[0]):
        order = np.sort(candidates[row, :depth])
        sims = np.asarray(base[order], dtype=np.float64) @ queries64[row]
        kept = np.sort(sims)[::-1][:TOP]
        hits[row] = min(TOP, int(np.sum(kept >= exact_sims[row, TOP - 1] - TIE_TOLERANCE)))
    return hits


def top_pair_error(
    base: npt.NDArray[Any],
    queries: F32,
    quantizer: Quantizer,
    exact_ids: I64,
    exact_sims: F64,
) -> dict[str, float]:
    """Mean |approx - exact| over the (query, exact top-TOP neighbour) pairs, both schemes."""
    flat = exact_ids[:, :TOP].reshape(-1)
    order = np.argsort(flat, kind="stable")
    vectors = np.empty((flat.size, base.shape[1]), np.float32)
    vectors[order] = np.asarray(base[flat[order]], dtype=np.float32)
    codes = quantizer.encode(vectors)
    repeated = np.ascontiguousarray(np.repeat(queries, TOP, axis=0))
    state = QueryState.prepare(repeated, quantizer)
    truth = exact_sims[:, :TOP].reshape(-1)
    return {
        f"{quantizer.name}/f32": float(
            np.abs(score_f32(state, quantizer, codes, pairwise=True) - truth).mean()
        ),
        f"{quantizer.name}/int8": float(
            np.abs(score_int8(state, codes, pairwise=True) - truth).mean()
        ),
    }


def smallest_depth(recalls: dict[int, float], target: float) -> int | None:
    for depth in sorted(recalls):
        if recalls[depth] >= target:
            return depth
    return None


def measure(
    base: npt.NDArray[Any],
    queries: F32,
    result: ScanResult,
    depths: Sequence[int],
) -> tuple[dict[str, dict[str, Any]], dict[str, F64]]:
    """(table row per configuration, per-query recall@10 without rerank per configuration)."""
    rows: dict[str, dict[str, Any]] = {}
    per_queries: dict[str, F64] = {}
    for name, ranking in result.approx_ids.items():
        per_query = rerank_hits(base, queries, ranking, result.exact_sims, TOP) / TOP
        per_queries[name] = per_query
        recalls = {
            depth: float(rerank_hits(base, queries, ranking, result.exact_sims, depth).mean() / TOP)
            for depth in depths
        }
        rows[name] = {
            "recall_at_10": float(per_query.mean()),
            # standard error of the mean over queries (per-query recall@10)
            "recall_at_10_se": float(per_query.std(ddof=1) / np.sqrt(len(per_query))),
            "rerank_recall": {str(depth): value for depth, value in recalls.items()},
            "depth_for": {
                str(target): smallest_depth(recalls, target) for target in RECALL_TARGETS
            },
        }
        if name in result.mae_all:
            rows[name]["mae_all_pairs"] = result.mae_all[name]
    return rows, per_queries


# Paired differences of recall@10 without rerank (same queries): (minuend, subtrahend).
COMPARISONS = tuple((f"{quantizer}/int8", f"{quantizer}/f32") for quantizer in QUANTIZERS) + tuple(
    (f"{better}/{scheme}", f"{worse}/{scheme}")
    for scheme in SCHEMES
    for better, worse in (("lvq", "sq8"), ("lvq", "lvq-nocenter"), ("sq8", "sq8-clip"))
)


def paired(per_queries: dict[str, F64]) -> dict[str, dict[str, float]]:
    """Mean and standard error of per-query recall@10 differences (paired over queries)."""
    out: dict[str, dict[str, float]] = {}
    for first, second in COMPARISONS:
        difference = per_queries[first] - per_queries[second]
        out[f"{first} - {second}"] = {
            "mean": float(difference.mean()),
            "se": float(difference.std(ddof=1) / np.sqrt(len(difference))),
        }
    return out


# --------------------------------------------------------------------------- PCA


def pca_rotation(base: npt.NDArray[Any], chunk: int) -> tuple[F64, F64]:
    """(R with rows = covariance eigenvectors, largest variance first; their variances)."""
    dim = base.shape[1]
    total = np.zeros(dim, np.float64)
    gram = np.zeros((dim, dim), np.float64)
    for block in iter_chunks(base, chunk, _identity):
        block64 = block.astype(np.float64)
        total += block64.sum(axis=0)
        gram += block64.T @ block64
    count = base.shape[0]
    mean = total / count
    covariance = gram / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    return np.ascontiguousarray(vectors[:, order].T), values[order]


def pick_best(rows: dict[str, dict[str, Any]], count: int) -> list[str]:
    """Best configurations: highest recall@10 without rerank, then mean rerank recall, then
    lowest MAE over all pairs."""

    def key(name: str) -> tuple[float, float, float]:
        row = rows[name]
        rerank = [float(value) for value in row["rerank_recall"].values()]
        # rounded so float noise cannot break a tie; then the lower score error wins
        return (
            round(float(row["recall_at_10"]), 6),
            round(sum(rerank) / len(rerank), 6),
            -float(row.get("mae_all_pairs", 0.0)),
        )

    return sorted(rows, key=key, reverse=True)[:count]


def prefix_study(
    data: datasets.Dataset,
    queries: F32,
    exact: ScanResult,
    configurations: Sequence[str],
    chunk: int,
) -> dict[str, Any]:
    rotation, variances = pca_rotation(data.base, chunk)
    rotation32 = rotation.astype(np.float32)

    def rotate(block: F32) -> F32:
        return np.ascontiguousarray(block @ rotation32.T)

    rotated_queries = rotate(queries)
    quantizer_names = sorted({name.split("/")[0] for name in configurations})
    scorers: list[BlockScorer] = [
        float_prefix_scorer(rotated_queries, PREFIX_DIMS, "float-prefix/pca", transformed=True),
        float_prefix_scorer(queries, PREFIX_DIMS, "float-prefix/raw", transformed=False),
    ]
    code_modes: dict[str, list[str]] = {}
    for quantizer_name in quantizer_names:
        print(f"  training {quantizer_name} on the rotated base", flush=True)
        quantizer = train(quantizer_name, data.base, chunk, rotate)
        modes = ["full", "prefix"] if quantizer.per_vector else ["prefix"]
        code_modes[quantizer_name] = modes
        for mode in modes:
            scorers.append(
                _renamed(
                    quantizer_scorer(quantizer, rotated_queries, PREFIX_DIMS, mode),
                    suffix=f"@{mode}",
                )
            )
    result = scan(
        data.base,
        queries,
        scorers,
        max(PREFIX_RERANK_DEPTHS),
        chunk,
        transform=rotate,
        track_error=False,
        label="pca-prefix",
    )
    # Same exact full-dimension ground truth as the main pass (checked, not assumed).
    agreement = float(np.mean(result.exact_ids == exact.exact_ids))
    rows, _ = measure(data.base, queries, result, PREFIX_RERANK_DEPTHS)
    # Both query schemes of the chosen quantizers are kept (they cost nothing extra).
    kept = dict(rows)
    explained = float(variances[:PREFIX_DIMS].sum() / variances.sum())
    return {
        "prefix_dims": PREFIX_DIMS,
        "configurations": list(configurations),
        "code_modes": code_modes,
        "variance_explained_by_prefix": explained,
        "ground_truth_agreement_with_main_pass": agreement,
        "rows": kept,
    }


def _renamed(scorer: BlockScorer, suffix: str) -> BlockScorer:
    def score(raw: F32, block: F32) -> dict[str, F32]:
        return {f"{name}{suffix}": value for name, value in scorer(raw, block).items()}

    return score


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _recall(row: dict[str, Any]) -> str:
    return f"{row['recall_at_10']:.3f} ±{row['recall_at_10_se']:.3f}"


def _reach(value: int | None, depths: Sequence[int]) -> str:
    return f"more than R={max(depths)}" if value is None else f"R={value}"


def _depth(value: int | None, depths: Sequence[int]) -> str:
    return f">{max(depths)}" if value is None else str(value)


def main_table(name: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    header = (
        "| quantizer | query | recall@10 ±SE | "
        + " | ".join(f"R={depth}" for depth in RERANK_DEPTHS)
        + " | R for 0.95 | R for 0.99 | MAE all pairs | MAE top-10 pairs |"
    )
    lines = [f"### {name}", "", header, "|" + "---|" * (header.count("|") - 1)]
    for quantizer in QUANTIZERS:
        for scheme in SCHEMES:
            row = rows[f"{quantizer}/{scheme}"]
            recalls = [_fmt(row["rerank_recall"][str(depth)]) for depth in RERANK_DEPTHS]
            lines.append(
                f"| {quantizer} | {scheme} | {_recall(row)} | "
                + " | ".join(recalls)
                + f" | {_depth(row['depth_for']['0.95'], RERANK_DEPTHS)}"
                + f" | {_depth(row['depth_for']['0.99'], RERANK_DEPTHS)}"
                + f" | {row['mae_all_pairs']:.2e} | {row['mae_top_pairs']:.2e} |"
            )
    return lines


def prefix_table(study: dict[str, Any]) -> list[str]:
    depths = PREFIX_RERANK_DEPTHS
    header = (
        "| configuration | codes | recall@10 ±SE (no rerank) | "
        + " | ".join(f"R={depth}" for depth in depths)
        + " | R for 0.95 | R for 0.99 |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in study["rows"].items():
        if name.startswith("float-prefix/"):
            label = "f32 prefix, PCA-rotated" if name.endswith("pca") else "f32 prefix, raw dims"
            codes = "none (control)"
        else:
            label, mode = name.split("@")
            codes = (
                "lo/step over all dims"
                if mode == "full"
                else f"lo/step over the first {PREFIX_DIMS} dims"
            )
            if not label.startswith("lvq"):
                codes = "per-dim ranges of the first dims"
            if label in study["configurations"]:
                label += " *"
        recalls = [_fmt(row["rerank_recall"][str(depth)]) for depth in depths]
        lines.append(
            f"| {label} | {codes} | {_recall(row)} | "
            + " | ".join(recalls)
            + f" | {_depth(row['depth_for']['0.95'], PREFIX_RERANK_DEPTHS)}"
            + f" | {_depth(row['depth_for']['0.99'], PREFIX_RERANK_DEPTHS)} |"
        )
    return lines


def _signed(value: float) -> str:
    return f"{0.0 if abs(value) < 0.0005 else value:+.3f}"


def _difference(entry: dict[str, Any], first: str, second: str) -> str:
    stats = entry["paired_recall_at_10_differences"][f"{first} - {second}"]
    return f"{_signed(stats['mean'])} ±{stats['se']:.3f}"


def conclusions(results: dict[str, Any]) -> list[str]:
    """Data-driven sentences: the winner, the cost of the int8 query, the rerank depth."""
    names = list(results["datasets"])
    entries = [results["datasets"][name] for name in names]
    sentences: list[str] = []
    for name, entry in zip(names, entries):
        rows = entry["rows"]
        ranked = sorted(
            QUANTIZERS, key=lambda quantizer: -rows[f"{quantizer}/int8"]["recall_at_10"]
        )
        order = " ≥ ".join(
            f"{quantizer} {rows[f'{quantizer}/int8']['recall_at_10']:.3f} "
            f"(MAE {rows[f'{quantizer}/int8']['mae_all_pairs']:.1e})"
            for quantizer in ranked
        )
        sentences.append(
            f"{name}, recall@10 without rerank with the int8 query (the kernel's scheme): "
            f"{order}. Paired differences over the same queries (±SE): lvq - sq8 "
            f"{_difference(entry, 'lvq/int8', 'sq8/int8')}, lvq - lvq-nocenter "
            f"{_difference(entry, 'lvq/int8', 'lvq-nocenter/int8')}, sq8 - sq8-clip "
            f"{_difference(entry, 'sq8/int8', 'sq8-clip/int8')}."
        )
    for name, entry in zip(names, entries):
        rows = entry["rows"]
        costs = ", ".join(
            f"{quantizer} {_difference(entry, f'{quantizer}/int8', f'{quantizer}/f32')}"
            for quantizer in QUANTIZERS
        )
        worst_after = min(
            rows[f"{quantizer}/int8"]["rerank_recall"]["15"]
            - rows[f"{quantizer}/f32"]["rerank_recall"]["15"]
            for quantizer in QUANTIZERS
        )
        mae_ratio = [
            rows[f"{quantizer}/int8"]["mae_all_pairs"] / rows[f"{quantizer}/f32"]["mae_all_pairs"]
            for quantizer in QUANTIZERS
        ]
        sentences.append(
            f"{name}, cost of quantizing the query (int8 - f32 recall@10 without rerank): "
            f"{costs}; at R=15 it loses at most {max(0.0, -worst_after):.3f}; the int8 query "
            f"multiplies the score MAE by {min(mae_ratio):.1f}-{max(mae_ratio):.1f}."
        )
    best_int8 = [
        pick_best({k: v for k, v in e["rows"].items() if k.endswith("/int8")}, 1)[0]
        for e in entries
    ]
    for name, entry, best in zip(names, entries, best_int8):
        row = entry["rows"][best]
        every = [entry["rows"][key] for key in entry["rows"]]
        worst95 = _worst_depth(every, "0.95")
        worst99 = _worst_depth(every, "0.99")
        sentences.append(
            f"{name}, rerank depth without graph error: `{best}` reaches 0.95 at "
            f"{_reach(row['depth_for']['0.95'], RERANK_DEPTHS)} and 0.99 at "
            f"{_reach(row['depth_for']['0.99'], RERANK_DEPTHS)}; over all eight configurations "
            f"0.95 needs at most {worst95} and 0.99 at most {worst99}; the worst configuration "
            f"at R=20 has recall {min(r['rerank_recall']['20'] for r in every):.4f}."
        )
    winners = {best.split("/")[0] for best in best_int8}
    if len(winners) == 1:
        sentences.insert(0, _decision(winners.pop(), names, entries))
    study = results.get("prefix_study")
    if study:
        sentences += _prefix_conclusions(study)
    return sentences


def _decision(winner: str, names: Sequence[str], entries: Sequence[dict[str, Any]]) -> str:
    """The headline: the quantizer whose int8-query configuration is best everywhere."""
    recalls = [entry["rows"][f"{winner}/int8"]["recall_at_10"] for entry in entries]
    errors = [entry["rows"][f"{winner}/int8"]["mae_all_pairs"] for entry in entries]
    lowest = all(
        entry["rows"][f"{winner}/int8"]["mae_all_pairs"]
        <= min(entry["rows"][f"{q}/int8"]["mae_all_pairs"] for q in QUANTIZERS)
        for entry in entries
    )
    key = f"{winner}/int8 - {winner}/f32"
    cost = max(-entry["paired_recall_at_10_differences"][key]["mean"] for entry in entries)
    after = max(
        entry["rows"][f"{winner}/f32"]["rerank_recall"]["15"]
        - entry["rows"][f"{winner}/int8"]["rerank_recall"]["15"]
        for entry in entries
    )
    ties = []
    for name, entry in zip(names, entries):
        close = [
            other
            for other in QUANTIZERS
            if (
                stats := entry["paired_recall_at_10_differences"].get(
                    f"{winner}/int8 - {other}/int8"
                )
            )
            and stats["mean"] < 2 * stats["se"]
        ]
        if close:
            ties.append(f"on {name} its recall lead over {', '.join(close)} is under 2 SE")
    return (
        f"**Decision: `{winner}` codes with the int8 query.** It is the best int8-query "
        f"configuration on {' and '.join(names)} (recall@10 without rerank "
        + " / ".join(f"{value:.3f}" for value in recalls)
        + ", score MAE "
        + " / ".join(f"{value:.1e}" for value in errors)
        + (", the lowest of the int8 rows" if lowest else "")
        + (f"; {'; '.join(ties)}, so there the lower MAE decides" if ties else "")
        + f"); quantizing the query costs at most {max(0.0, cost):.3f} recall@10 before rerank "
        f"and at most {max(0.0, after):.3f} after a rerank of R=15."
    )


def _worst_depth(rows: Sequence[dict[str, Any]], target: str) -> str:
    depths = [row["depth_for"][target] for row in rows]
    if any(depth is None for depth in depths):
        return f"more than R={max(RERANK_DEPTHS)}"
    return f"R={max(depths)}"


def _prefix_conclusions(study: dict[str, Any]) -> list[str]:
    rows = study["rows"]
    quantized = [name for name in rows if not name.startswith("float-prefix/")]
    control = rows["float-prefix/pca"]
    raw = rows["float-prefix/raw"]
    gap = max(
        control["rerank_recall"][key] - rows[name]["rerank_recall"][key]
        for name in quantized
        for key in control["rerank_recall"]
    )
    cause = (
        "so truncation, not quantization, sets the rerank depth"
        if gap < 0.005
        else f"so quantization costs up to {gap:.3f} recall on top of truncation"
    )
    pairs = [
        (rows[f"{label}@full"], rows[f"{label}@prefix"])
        for label in sorted({name.split("@")[0] for name in quantized})
        if f"{label}@full" in rows and f"{label}@prefix" in rows
    ]
    mode_gap = max(
        [abs(full["recall_at_10"] - prefix["recall_at_10"]) for full, prefix in pairs]
        + [
            abs(full["rerank_recall"][key] - prefix["rerank_recall"][key])
            for full, prefix in pairs
            for key in full["rerank_recall"]
        ]
    )
    return [
        f"PCA prefix ({PREFIX_DIMS} of 384 dims, {study['variance_explained_by_prefix']:.1%} "
        "of the variance): the unquantized rotated prefix, reranked on the full vector, reaches "
        + ", ".join(f"R={k} {control['rerank_recall'][str(k)]:.3f}" for k in PREFIX_RERANK_DEPTHS)
        + f" (0.95 at {_reach(control['depth_for']['0.95'], PREFIX_RERANK_DEPTHS)}, 0.99 at "
        f"{_reach(control['depth_for']['0.99'], PREFIX_RERANK_DEPTHS)}); every quantized "
        f"variant stays within {gap:.3f} of it at every R, {cause}. LVQ codes with lo/step "
        f"from the prefix or from the whole vector differ by at most {mode_gap:.3f}. The "
        f"rotation matters: the raw first {PREFIX_DIMS} dims need "
        f"{_reach(raw['depth_for']['0.95'], PREFIX_RERANK_DEPTHS)} for 0.95 and "
        f"{_reach(raw['depth_for']['0.99'], PREFIX_RERANK_DEPTHS)} for 0.99."
    ]


def write_report(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    meta = results["meta"]
    lines = [
        "# int8 scalar quantization: code fidelity study",
        "",
        f"Produced by `{meta['command']}` from the repository root (HEAD {meta['commit']} at "
        f"run time, numpy {meta['numpy']}, {meta['elapsed_seconds']:.0f} s).",
        "",
        f"Brute force, no graph: the first {meta['queries']} queries of each data set against "
        "the whole base, inner product on unit vectors. Ground truth: exact float64 top 10; a "
        "returned id whose exact score ties the 10th within 1e-9 (duplicate vectors) counts as "
        "a hit. "
        "`recall@10` is the approximate top 10 without rerank; `R=n` is recall@10 after "
        "rescoring the approximate top n exactly (what the f32 rerank sees when graph search "
        "is perfect). MAE: mean |approximate score - exact dot| over all query x base pairs "
        "and over the exact top-10 pairs. Quantizers: `sq8` per-dim min/max; `sq8-clip` "
        "per-dim 0.1/99.9 percentiles; `lvq` per-vector range around the base mean; "
        "`lvq-nocenter` per-vector range, no centering. Queries: `f32` = float query against "
        "dequantized codes; `int8` = query quantized to int8 with one scale, exact integer "
        "dot with the uint8 codes plus per-node float corrections (the C++ kernel).",
        "",
    ]
    for name in results["datasets"]:
        entry = results["datasets"][name]
        title = (
            f"{name} ({entry['n_base']:,} x {entry['dim']}; "
            f"{entry['queries_with_exact_tie_at_10']} of {meta['queries']} queries have an "
            f"exact tie at rank 10; {len(entry['near_constant_dims'])} near-constant dims)"
        )
        lines += main_table(title, entry["rows"])
        lines.append("")
    study = results.get("prefix_study")
    if study:
        lines += [
            f"### {datasets.MINILM_NAME}: first {PREFIX_DIMS} dims after a PCA rotation",
            "",
            "The quantizers of the two best configurations above (marked *: "
            f"{', '.join(study['configurations'])}), both query schemes, on the first "
            f"{PREFIX_DIMS} PCA-rotated dims ({study['variance_explained_by_prefix']:.1%} "
            "of the variance); approximate score = re-normalized prefix cosine "
            "dot(q[:p], x_hat[:p]) / (|q[:p]| |x[:p]|) with the exact |x[:p]|; rerank on the "
            "full float vector; ground truth = exact full-dim top 10. Controls: the "
            "unquantized prefix cosine, rotated and raw.",
            "",
        ]
        lines += prefix_table(study)
        lines.append("")
    lines += ["## Conclusions", ""]
    lines += [f"- {sentence}" for sentence in conclusions(results)]
    lines.append("")
    (out / "table.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------- main


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _command(argv: Sequence[str]) -> str:
    prefix = (
        f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} " if "PYTHONPATH" in os.environ else ""
    )
    return prefix + " ".join(["python -m bench.quant_study", *map(shlex.quote, argv)])


def study_dataset(
    data: datasets.Dataset, queries: F32, chunk: int
) -> tuple[dict[str, Any], ScanResult]:
    quantizers = []
    for name in QUANTIZERS:
        print(f"  training {name}", flush=True)
        quantizers.append(train(name, data.base, chunk))
    scorers = [quantizer_scorer(quantizer, queries) for quantizer in quantizers]
    result = scan(data.base, queries, scorers, max(RERANK_DEPTHS), chunk, label=data.name)
    rows, per_queries = measure(data.base, queries, result, RERANK_DEPTHS)
    for quantizer in quantizers:
        for name, error in top_pair_error(
            data.base, queries, quantizer, result.exact_ids, result.exact_sims
        ).items():
            rows[name]["mae_top_pairs"] = error
    stored = np.asarray(data.gt_ids[: queries.shape[0], :TOP], dtype=np.int64)
    peak = np.zeros(data.dim, np.float32)
    for block in iter_chunks(data.base, chunk, _identity):
        peak = np.maximum(peak, np.abs(block).max(axis=0))
    entry = {
        "n_base": data.n_base,
        "dim": data.dim,
        "directory": str(data.directory),
        "ground_truth_agreement_with_stored_float32": sum(
            len(np.intersect1d(stored[row], result.exact_ids[row, :TOP]))
            for row in range(len(stored))
        )
        / stored.size,
        "queries_with_exact_tie_at_10": int(
            np.sum(result.exact_sims[:, TOP] >= result.exact_sims[:, TOP - 1] - TIE_TOLERANCE)
        ),
        # dims with max |x| < 1e-6 over the base (sq8 gives them a vanishing step)
        "near_constant_dims": [int(dim) for dim in np.where(peak < 1e-6)[0]],
        "quantizer_params": {
            quantizer.name: {
                "m_range": [float(quantizer.m.min()), float(quantizer.m.max())],
                "s_range": [float(quantizer.s.min()), float(quantizer.s.max())],
            }
            for quantizer in quantizers
        },
        "rows": rows,
        "paired_recall_at_10_differences": paired(per_queries),
    }
    return entry, result


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quant_study", description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None, help="bench data set cache")
    parser.add_argument("--queries", type=int, default=1000, help="queries per data set")
    parser.add_argument("--chunk", type=int, default=16384, help="base rows per chunk")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--no-prefix", action="store_true", help="skip the PCA prefix study")
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=DATASET_NAMES,
        default=list(DATASET_NAMES),
        help="data sets to study (default: both)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite table.md from the results.json in --out (no measuring)",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        write_report(json.loads((args.out / "results.json").read_text()), args.out)
        print(f"rewrote {args.out / 'table.md'}", flush=True)
        return 0
    arguments = list(sys.argv[1:] if argv is None else argv)
    cache_dir = args.cache_dir or datasets.default_cache_dir()
    started = time.perf_counter()
    results: dict[str, Any] = {"datasets": {}}
    minilm: tuple[datasets.Dataset, F32, ScanResult] | None = None
    for name in args.datasets:
        print(f"{name}: preparing / loading", flush=True)
        data = datasets.load(datasets.prepare(name, cache_dir), mmap=True)
        queries = np.ascontiguousarray(data.queries[: args.queries], dtype=np.float32)
        entry, result = study_dataset(data, queries, args.chunk)
        results["datasets"][name] = entry
        if name == datasets.MINILM_NAME:
            minilm = (data, queries, result)
    if not args.no_prefix and minilm is not None:
        data, queries, result = minilm
        best = pick_best(results["datasets"][datasets.MINILM_NAME]["rows"], 2)
        print(f"{data.name}: PCA prefix study of {', '.join(best)}", flush=True)
        results["prefix_study"] = prefix_study(data, queries, result, best, args.chunk)
    results["meta"] = {
        "command": _command(arguments),
        "commit": _commit(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "queries": args.queries,
        "chunk": args.chunk,
        "rerank_depths": list(RERANK_DEPTHS),
        "prefix_rerank_depths": list(PREFIX_RERANK_DEPTHS),
        "clip_percentiles": list(CLIP_PERCENTILES),
        "elapsed_seconds": time.perf_counter() - started,
    }
    write_report(results, args.out)
    print(f"wrote {args.out / 'table.md'} and {args.out / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
