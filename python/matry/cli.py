"""The ``matry`` command: ``matry demo``, ``matry tune ...`` and ``matry bench ...``."""

from __future__ import annotations

import argparse
import ast
import os
import random
import sys
import sysconfig
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from .collection import Hit


@dataclass(frozen=True)
class DemoQuery:
    """A built-in demo query and the docstrings (qualified names) that answer it, best first.

    The demo always indexes the first of them that this Python's standard library has, so every
    query has a right answer in the corpus; any of them found among the hits counts."""

    text: str
    answers: tuple[str, ...]


DEMO_QUERIES = (
    DemoQuery(
        "serialize a Python object to JSON",
        ("json.dumps", "json.dump", "json", "json.JSONEncoder", "json.JSONEncoder.encode"),
    ),
    DemoQuery(
        "compress data with gzip",
        ("gzip.compress", "gzip", "gzip.open", "gzip.GzipFile", "gzip.decompress"),
    ),
    DemoQuery(
        "parse command line arguments",
        (
            "argparse.ArgumentParser",
            "argparse",
            "getopt",
            "getopt.getopt",
            "optparse",
            "optparse.OptionParser",
        ),
    ),
    DemoQuery(
        "generate a random number in a range",
        (
            "random.Random.randint",
            "random.Random.randrange",
            "random.Random.uniform",
            "secrets.randbelow",
        ),
    ),
    DemoQuery(
        "send an email message",
        ("smtplib.SMTP.send_message", "smtplib.SMTP.sendmail", "smtplib", "smtplib.SMTP"),
    ),
    DemoQuery(
        "copy a file to another directory",
        ("shutil.copy", "shutil.copy2", "shutil.copyfile"),
    ),
)
_SKIPPED_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "ensurepip",
    "__pycache__",
    "__phello__",
    "venv",
}
_MIN_DOC_CHARS = 24
_MAX_DOC_CHARS = 400


def _first_paragraph(docstring: str | None) -> str | None:
    if not docstring:
        return None
    paragraph = docstring.strip().split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    if len(text) < _MIN_DOC_CHARS:
        return None
    return text[:_MAX_DOC_CHARS]


def _stdlib_modules(stdlib: Path) -> list[tuple[str, Path]]:
    """(module name, file) of the public pure-Python modules of the standard library."""
    modules = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        for filename in sorted(files):
            if not filename.endswith(".py"):
                continue
            path = Path(root) / filename
            parts = list(path.relative_to(stdlib).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts and not any(p.startswith("_") for p in parts):
                modules.append((".".join(parts), path))
    return modules


def _docstrings_of_module(module: str, path: Path) -> Iterator[tuple[str, str]]:
    """(qualified name, first docstring paragraph) of a module and its public classes and
    functions, read with ``ast``: nothing is imported, so no import side effects run."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return
    text = _first_paragraph(ast.get_docstring(tree))
    if text:
        yield module, text
    yield from _docstrings_of_body(tree.body, module)


def _docstrings_of_body(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, str]]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name.startswith("_"):
                continue
            name = f"{prefix}.{node.name}"
            text = _first_paragraph(ast.get_docstring(node))
            if text:
                yield name, text
            if isinstance(node, ast.ClassDef):
                yield from _docstrings_of_body(node.body, name)


def _docstrings_from_objects() -> Iterator[tuple[str, str]]:
    """Fallback for Pythons installed without .py sources: builtins and a few safe modules."""
    import builtins
    import collections
    import itertools
    import json
    import math
    import os.path
    import string

    for module in (builtins, collections, itertools, json, math, os.path, string, sys):
        for attribute in sorted(dir(module)):
            if attribute.startswith("_"):
                continue
            text = _first_paragraph(getattr(getattr(module, attribute, None), "__doc__", None))
            if text:
                yield f"{module.__name__}.{attribute}", text


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_docstrings(
    count: int, seed: int = 0, exclude: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Up to ``count`` (name, text) pairs from the standard library's docstrings, texts unique
    and none of the texts in ``exclude``.

    Modules are visited in a seeded random order (so a small sample still spreads over the
    whole library, and only as many files are parsed as needed); the result is sorted by name.
    """
    stdlib = _stdlib_dir()
    modules = _stdlib_modules(stdlib) if stdlib.is_dir() else []
    random.Random(seed).shuffle(modules)
    seen: set[str] = set(exclude)
    pairs: list[tuple[str, str]] = []

    def take(found: Iterator[tuple[str, str]], limit: int) -> None:
        taken = 0
        for name, text in found:
            if len(pairs) >= count or taken >= limit:
                return
            if text not in seen:
                seen.add(text)
                pairs.append((name, text))
                taken += 1

    # a few texts per module first, so that the sample covers many modules
    per_module = max(2, -(-count // 150))
    for limit in (per_module, count):
        for module, path in modules:
            if len(pairs) >= count:
                break
            take(_docstrings_of_module(module, path), limit)
    if len(pairs) < count:
        take(_docstrings_from_objects(), count)
    return sorted(pairs)


def find_docstrings(names: Iterable[str]) -> dict[str, str]:
    """{qualified name: first docstring paragraph} of those ``names`` the standard library has,
    read like :func:`stdlib_docstrings` (with ``ast``; the fallback objects without sources)."""
    wanted = set(names)
    stdlib = _stdlib_dir()
    modules = dict(_stdlib_modules(stdlib)) if stdlib.is_dir() else {}
    by_module: dict[str, set[str]] = {}
    for name in wanted:
        parts = name.split(".")
        # the longest prefix that is a module: "random.Random.randint" is in "random"
        module = next(
            (".".join(parts[:cut]) for cut in range(len(parts), 0, -1)
             if ".".join(parts[:cut]) in modules),
            None,
        )  # fmt: skip
        if module is not None:
            by_module.setdefault(module, set()).add(name)
    found: dict[str, str] = {}
    for module, members in by_module.items():
        for name, text in _docstrings_of_module(module, modules[module]):
            if name in members:
                found[name] = text
    if len(found) < len(wanted):
        for name, text in _docstrings_from_objects():
            if name in wanted and name not in found:
                found[name] = text
    return found


def demo_corpus(
    count: int, queries: Sequence[DemoQuery] = DEMO_QUERIES, seed: int = 0
) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """The demo's (name, text) pairs and, per query text, the names of its answers that are in
    them. The first available answer of every query is always included (so a small ``count``
    still holds them, and may be exceeded by them), then a seeded sample fills up to ``count``;
    a query none of whose answers exists in this Python is left out of the second result."""
    available = find_docstrings(name for query in queries for name in query.answers)
    required: dict[str, str] = {}
    for query in queries:
        first = next((name for name in query.answers if name in available), None)
        if first is not None:
            required[first] = available[first]
    texts = set(required.values())
    sample = stdlib_docstrings(max(0, count - len(required)), seed=seed, exclude=texts)
    pairs = sorted([*required.items(), *sample])
    present = {name for name, _ in pairs}
    answers = {
        query.text: [name for name in query.answers if name in present]
        for query in queries
        if any(name in present for name in query.answers)
    }
    return pairs, answers


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def run_demo(
    count: int,
    queries: Sequence[str] | None,
    k: int,
    threads: int | None,
    progress: bool = True,
) -> int:
    """Index ``count`` docstrings and search them. Without ``queries`` the built-in ones run,
    each with a right answer in the corpus, and every hit list says whether it holds one."""
    from .collection import Collection
    from .encoder import Encoder

    started = time.perf_counter()
    if queries is None:
        pairs, answers = demo_corpus(count)
        for demo in DEMO_QUERIES:
            if demo.text not in answers:
                print(
                    f"query {demo.text!r} left out: none of its answers "
                    f"({', '.join(demo.answers)}) is in this Python's standard library"
                )
        queries = [demo.text for demo in DEMO_QUERIES if demo.text in answers]
    else:
        pairs, answers = stdlib_docstrings(count), {}
    gathered = time.perf_counter() - started
    raised = f", raised from --count {count} to hold every answer" if len(pairs) > count else ""
    print(
        f"matry demo: {len(pairs)} docstrings from the Python {sys.version.split()[0]} "
        f"standard library ({gathered:.2f} s to read{raised})"
    )
    if not pairs:
        print("no docstrings found", file=sys.stderr)
        return 1

    started = time.perf_counter()
    encoder = Encoder(num_threads=threads)
    loaded = time.perf_counter() - started
    print(
        f"encoder: {encoder.name}, {encoder.dim}-d ({loaded:.2f} s to load), "
        f"fingerprint {encoder.fingerprint}"
    )

    collection = Collection(encoder)
    texts = [text for _, text in pairs]
    started = time.perf_counter()
    vectors = encoder.encode(texts, input_type="document", progress=progress)
    encode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    collection.add_vectors(
        vectors, encoder.fingerprint, texts=texts, metadata=[{"name": name} for name, _ in pairs]
    )
    build_seconds = time.perf_counter() - started
    print(
        f"encode: {len(texts)} texts in {encode_seconds:.2f} s "
        f"({len(texts) / max(encode_seconds, 1e-9):.0f} texts/s)"
    )
    print(f"index build: {build_seconds * 1000:.1f} ms (HNSW, cosine)")

    found = 0
    for query in queries:
        started = time.perf_counter()
        query_vector = encoder.encode(query, input_type="query")
        encoded = time.perf_counter()
        # one 1-D query vector gives one list of hits
        hits = cast(
            "list[Hit]", collection.search_vectors(query_vector[0], encoder.fingerprint, k=k)
        )
        searched = time.perf_counter()
        print(
            f"\nquery: {query!r}  (encode {(encoded - started) * 1000:.1f} ms, "
            f"search {(searched - encoded) * 1000:.2f} ms)"
        )
        names = []
        for hit in hits:
            name = (hit.metadata or {}).get("name", "?")
            names.append(name)
            print(f"  {hit.score:.3f}  {name}: {_shorten(hit.text or '', 90)}")
        expected = answers.get(query)
        if expected:
            rank = next((rank for rank, name in enumerate(names, 1) if name in expected), None)
            if rank is None:
                print(f"  right answer ({', '.join(expected)}): not in the top {k}")
            else:
                print(f"  right answer: {names[rank - 1]}, rank {rank} of {k}")
                found += 1
    if answers:
        print(f"\n{found} of {len(answers)} queries have a right answer in their top {k}")
    return 0


def _run_tune(argv: list[str]) -> int:
    from .tune import cli_main

    return int(cli_main(argv))


def _run_bench(argv: list[str]) -> int:
    from .bench import main as bench_main

    return int(bench_main(argv))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="matry",
        description="matry: HNSW search for embeddings that keeps the embedding contract",
    )
    parser.add_argument("--version", action="version", version=f"matry {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    demo = commands.add_parser(
        "demo",
        help="search the standard library's docstrings with the bundled encoder",
        description="Builds a collection from docstrings of the Python standard library with "
        "the bundled all-MiniLM-L6-v2 encoder, runs a few queries and prints the hits.",
    )
    demo.add_argument(
        "--count",
        type=_positive_int,
        default=2000,
        help="number of docstrings to index (default 2000)",
    )
    demo.add_argument(
        "--query",
        "-q",
        action="append",
        dest="queries",
        metavar="TEXT",
        help="a query (repeatable; default: six built-in queries, each checked against the "
        "docstring that answers it)",
    )
    demo.add_argument("-k", type=_positive_int, default=3, help="hits per query (default 3)")
    demo.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="encoder threads (default: onnxruntime's choice)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar while encoding")
    commands.add_parser(
        "tune", help="tune ef / M to a recall target (see matry tune --help)", add_help=False
    )
    commands.add_parser(
        "bench",
        help="compare matry with other ANN libraries on your vectors (see matry bench --help)",
        add_help=False,
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # tune and bench own their arguments: hand everything after the command over untouched
    if arguments and arguments[0] == "tune":
        return _run_tune(arguments[1:])
    if arguments and arguments[0] == "bench":
        return _run_bench(arguments[1:])
    parser = build_parser()
    options = parser.parse_args(arguments)
    if options.command == "demo":
        try:
            return run_demo(
                options.count,
                options.queries,
                options.k,
                options.threads,
                progress=not options.no_progress,
            )
        except ImportError as error:
            print(f"matry demo: {error}", file=sys.stderr)
            return 1
    parser.print_help()
    return 0 if not arguments else 2


if __name__ == "__main__":
    raise SystemExit(main())
