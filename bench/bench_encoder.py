"""Encoder throughput: matry.Encoder.encode against a bare onnxruntime session.

Sentences per second at batch sizes 1, 32 and 256, on short texts (~12 words) and long texts
(cut at the model's 256-token limit). The bare session gets the same inputs pre-tokenized,
sorted by length and padded exactly as matry batches them, so the difference is matry's own
overhead: tokenization, sorting, padding, pooling, normalization and reordering. Both use a
session with the same options and thread count. Each cell is the best of ``--repeats`` runs,
matry and bare interleaved.

    python bench/bench_encoder.py [--threads N] [--repeats 3] [--quick] [--clock wall|cpu]

Prints a markdown table. Target: overhead < 10%. The last two columns time matry's own work
alone (encode() with the model call stubbed out): on a busy machine the plain difference of
two model-dominated timings is mostly noise, while this one stays put.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matry.cli import stdlib_docstrings
from matry.encoder import Encoder

BATCH_SIZES = (1, 32, 256)


def make_texts(count: int, words: int) -> list[str]:
    """Texts of about ``words`` words built from standard-library docstrings (deterministic)."""
    pool = " ".join(text for _, text in stdlib_docstrings(2000)).split()
    texts = []
    for index in range(count):
        start = (index * 7919) % max(1, len(pool) - words)
        texts.append(" ".join(pool[start : start + words]))
    return texts


def bare_batches(encoder: Encoder, texts: list[str], batch_size: int) -> list[dict[str, Any]]:
    """Feeds as matry builds them: tokenized, sorted by length (longest first), padded."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(encoder._tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=encoder.max_length)
    encodings = tokenizer.encode_batch(texts)
    encodings.sort(key=lambda e: -len(e.ids))
    feeds = []
    for start in range(0, len(encodings), batch_size):
        chunk = encodings[start : start + batch_size]
        width = len(chunk[0].ids)
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(chunk):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feeds.append(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
    return feeds


def bare_session(encoder: Encoder, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(encoder.model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def best_time(run: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = clock()
        run()
        best = min(best, clock() - started)
    return best


def measure(
    encoder: Encoder,
    session: Any,
    texts: list[str],
    batch_size: int,
    repeats: int,
    clock: Callable[[], float],
) -> tuple[float, float, float]:
    """(bare seconds, matry seconds, mean tokens per text) for encoding ``texts`` once."""
    feeds = bare_batches(encoder, texts, batch_size)
    tokens = float(
        np.mean([int(f["attention_mask"].sum()) for f in feeds]) * len(feeds) / len(texts)
    )

    def run_bare() -> None:
        for feed in feeds:
            session.run(["last_hidden_state"], feed)

    def run_matry() -> None:
        encoder.encode(texts, batch_size=batch_size)

    run_bare()
    run_matry()  # warm-up
    bare = matry = float("inf")
    for _ in range(repeats):  # interleaved, so that machine noise hits both alike
        bare = min(bare, best_time(run_bare, 1, clock))
        matry = min(matry, best_time(run_matry, 1, clock))
    return bare, matry, tokens


class _StubSession:
    """Stands in for the onnxruntime session: returns zeros of the right shape at once."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch, width = feeds["input_ids"].shape
        return [np.zeros((batch, width, self.dim), dtype=np.float32)]


def own_work(
    encoder: Encoder, texts: list[str], batch_size: int, repeats: int, clock: Callable[[], float]
) -> float:
    """Seconds matry spends around the model (tokenize, sort, pad, pool, normalize, reorder)
    for ``texts``: encode() with the session replaced by a stub. Much less sensitive to other
    load on the machine than the difference of two model-dominated timings."""
    session = encoder._session
    encoder._session = _StubSession(encoder.dim)
    try:
        encoder.encode(texts, batch_size=batch_size)
        return best_time(lambda: encoder.encode(texts, batch_size=batch_size), repeats, clock)
    finally:
        encoder._session = session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads for both sessions (0 = onnxruntime default)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer texts (a smoke run)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or CPU time of the process (all threads): steadier on a shared "
        "machine, where other load inflates wall time at random",
    )
    args = parser.parse_args(argv)

    encoder = Encoder(num_threads=args.threads)
    session = bare_session(encoder, args.threads)
    scale = 4 if args.quick else 1
    workloads = {
        "short (~12 words)": make_texts(1024 // scale, 12),
        "long (256 tokens)": make_texts(256 // scale, 400),
    }
    import onnxruntime

    print(
        f"encoder {encoder.name} ({encoder.model_path.stat().st_size / 1e6:.1f} MB int8), "
        f"onnxruntime {onnxruntime.__version__}, threads={args.threads or 'default'}, "
        f"best of {args.repeats}, {args.clock} clock\n"
    )
    print(
        "| texts | batch | tokens/text | bare onnxruntime (sent/s) | matry.Encoder (sent/s) "
        "| overhead | matry's own work (µs/text) | own work / bare |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    worst = worst_own = -float("inf")
    for label, texts in workloads.items():
        for batch_size in BATCH_SIZES:
            bare, matry, tokens = measure(
                encoder, session, texts, batch_size, args.repeats, CLOCKS[args.clock]
            )
            own = own_work(encoder, texts, batch_size, args.repeats, CLOCKS[args.clock])
            overhead = (matry - bare) / bare * 100.0
            worst = max(worst, overhead)
            worst_own = max(worst_own, own / bare * 100.0)
            print(
                f"| {label} | {batch_size} | {tokens:.0f} | {len(texts) / bare:,.0f} | "
                f"{len(texts) / matry:,.0f} | {overhead:+.1f}% | "
                f"{own / len(texts) * 1e6:.0f} | {own / bare * 100.0:.1f}% |",
                flush=True,
            )
    print(f"\nworst measured overhead: {worst:+.1f}% (target < 10%)")
    print(f"worst own work / bare model time: {worst_own:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
