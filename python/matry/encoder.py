"""ONNX text encoder: sentence vectors from an ONNX sentence-embedding model, and their identity.

The encoder needs the optional dependencies onnxruntime and tokenizers (``pip install
'matry[encoder]'``). They are imported when an :class:`Encoder` is created, never when matry is
imported. A default model, all-MiniLM-L6-v2 (int8 ONNX, Apache-2.0), ships inside the package,
so ``Encoder()`` works offline; nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BUNDLED_MODEL",
    "Encoder",
    "EncoderConfig",
    "fingerprint_digest",
    "fingerprints_match",
]

#: Name of the model that ships inside the package (``Encoder()`` loads it).
BUNDLED_MODEL = "all-MiniLM-L6-v2"
_MODELS_DIR = Path(__file__).resolve().parent / "models"
_CONFIG_FILE = "encoder_config.json"
_INPUT_TYPES = ("document", "query")
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Texts tokenized (and sorted by length) together; bounds memory on very large inputs.
_WINDOW = 8192
_INSTALL_HINT = "pip install 'matry[encoder]'"


def _require(module: str) -> Any:
    """Import an optional dependency of the encoder, or say which extra provides it."""
    try:
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"matry.Encoder needs the optional package {module!r}, which is not installed: "
            f"{_INSTALL_HINT}"
        ) from exc


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_digest(fingerprint: str) -> str:
    """The hash part of a fingerprint ("name:384d:0123abcd..." -> "0123abcd...")."""
    return fingerprint.rsplit(":", 1)[-1]


def fingerprints_match(a: str, b: str) -> bool:
    """True when two fingerprints denote the same vectors.

    The readable name is a label only: the same model files loaded from a renamed directory
    give the same vectors, so only the hash part (which covers model and tokenizer sha256,
    pooling, normalization, dims, max length and prefixes) is compared.
    """
    return fingerprint_digest(a) == fingerprint_digest(b)


@dataclass(frozen=True)
class EncoderConfig:
    """How a model's token outputs become sentence vectors."""

    name: str
    pooling: str  # "mean" (over the attention mask) or "cls"
    normalize: bool  # L2-normalize the sentence vectors
    max_seq_length: int  # tokens, special tokens included; longer input is truncated
    query_prefix: str = ""
    document_prefix: str = ""
    output: str | None = None  # name of the model output to pool; None = pick automatically
    dim: int | None = None  # full output dimension; None = read from the model

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling: expected 'mean' or 'cls', got {self.pooling!r}")
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length: must be >= 2, got {self.max_seq_length}")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"dim: must be >= 1, got {self.dim}")

    @property
    def distinguishes_input_types(self) -> bool:
        """True when queries and documents are encoded differently (different prefixes)."""
        return self.query_prefix != self.document_prefix


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _sentence_transformers_settings(directory: Path) -> dict[str, Any]:
    """Settings found in the files a sentence-transformers export writes (all optional)."""
    found: dict[str, Any] = {}
    modules_file = directory / "modules.json"
    pooling_dir = directory / "1_Pooling"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        found["normalize"] = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling") and module.get("path"):
                pooling_dir = directory / str(module["path"])
    pooling_file = pooling_dir / "config.json"
    if pooling_file.is_file():
        pooling = _read_json(pooling_file)
        modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
        if modes == ["pooling_mode_mean_tokens"]:
            found["pooling"] = "mean"
        elif modes == ["pooling_mode_cls_token"]:
            found["pooling"] = "cls"
        else:
            raise ValueError(
                f"{pooling_file}: pooling {modes} is not supported (matry pools 'mean' or 'cls')"
            )
        if "word_embedding_dimension" in pooling:
            found["dim"] = int(pooling["word_embedding_dimension"])
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        max_seq_length = _read_json(st_config).get("max_seq_length")
        if max_seq_length:
            found["max_seq_length"] = int(max_seq_length)
    prompts_file = directory / "config_sentence_transformers.json"
    if prompts_file.is_file():
        prompts = _read_json(prompts_file).get("prompts") or {}
        if "query" in prompts:
            found["query_prefix"] = str(prompts["query"])
        for key in ("document", "passage", "corpus"):
            if key in prompts:
                found["document_prefix"] = str(prompts[key])
                break
    if "max_seq_length" not in found and (directory / "tokenizer_config.json").is_file():
        limit = _read_json(directory / "tokenizer_config.json").get("model_max_length")
        if isinstance(limit, int) and 2 <= limit <= 100_000:
            found["max_seq_length"] = limit
    return found


def _locate(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / "onnx" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: no {name} (looked in the directory and in onnx/)")


class Encoder:
    """Sentence vectors from an ONNX sentence-embedding model (onnxruntime, CPU).

    ``Encoder()`` loads the bundled all-MiniLM-L6-v2; ``Encoder("path/to/dir")`` or
    :meth:`from_dir` loads any sentence-transformers style ONNX export.

    ``encode`` tokenizes (truncating at :attr:`max_length` tokens), runs the model, pools
    (mean over the attention mask, or the CLS token, as the model's config says) and
    L2-normalizes, returning float32 ``[n, dim]``. Vectors are comparable only with vectors of
    the same :attr:`fingerprint` (see :meth:`fingerprint_for` for truncated dims).
    """

    def __init__(self, model: str | Path | None = None, num_threads: int | None = None) -> None:
        if model is None or str(model) == BUNDLED_MODEL:
            directory = _MODELS_DIR / BUNDLED_MODEL
        else:
            directory = Path(model)
            if not directory.is_dir():
                raise ValueError(
                    f"model: {str(model)!r} is neither the bundled model ({BUNDLED_MODEL!r}) "
                    "nor a directory holding model.onnx and tokenizer.json"
                )
        self._setup(directory, self._read_config(directory, {}), num_threads)

    @classmethod
    def default(cls) -> Encoder:
        """The bundled encoder, created once per process and shared (it is immutable)."""
        global _DEFAULT_ENCODER
        with _DEFAULT_LOCK:
            if _DEFAULT_ENCODER is None:
                _DEFAULT_ENCODER = cls()
            return _DEFAULT_ENCODER

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        *,
        num_threads: int | None = None,
        name: str | None = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
    ) -> Encoder:
        """Load an ONNX export: model.onnx and tokenizer.json (also under onnx/), plus settings.

        Settings are read from matry's ``encoder_config.json`` if present, else from the
        sentence-transformers files (``modules.json``, ``1_Pooling/config.json``,
        ``sentence_bert_config.json``, ``config_sentence_transformers.json`` prompts). Keyword
        arguments override what the files say; a setting found nowhere must be passed.
        """
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"path: {str(path)!r} is not a directory")
        overrides = {
            "name": name,
            "pooling": pooling,
            "normalize": normalize,
            "max_seq_length": max_length,
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
        }
        config = cls._read_config(directory, {k: v for k, v in overrides.items() if v is not None})
        encoder = cls.__new__(cls)
        encoder._setup(directory, config, num_threads)
        return encoder

    @staticmethod
    def _read_config(directory: Path, overrides: dict[str, Any]) -> EncoderConfig:
        config_file = directory / _CONFIG_FILE
        if config_file.is_file():
            settings = _read_json(config_file)
        else:
            settings = _sentence_transformers_settings(directory)
        settings.setdefault("name", directory.resolve().name)
        settings.update(overrides)
        missing = [key for key in ("pooling", "normalize", "max_seq_length") if key not in settings]
        if missing:
            hint = {
                "pooling": "pooling='mean' or 'cls'",
                "normalize": "normalize=True",
                "max_seq_length": "max_length=512",
            }
            raise ValueError(
                f"{directory}: no {', '.join(missing)} setting found (looked for {_CONFIG_FILE} "
                "and sentence-transformers config files); pass "
                + ", ".join(hint[m] for m in missing)
                + " to Encoder.from_dir"
            )
        fields = EncoderConfig.__dataclass_fields__
        return EncoderConfig(**{k: v for k, v in settings.items() if k in fields})

    def _setup(self, directory: Path, config: EncoderConfig, num_threads: int | None) -> None:
        ort = _require("onnxruntime")
        tokenizers = _require("tokenizers")
        if num_threads is not None and num_threads < 0:
            raise ValueError(
                f"num_threads: must be >= 0 (0 = onnxruntime default), got {num_threads}"
            )
        self._config = config
        self._directory = directory
        self._model_path = _locate(directory, "model.onnx")
        try:
            self._tokenizer_path = _locate(directory, "tokenizer.json")
        except FileNotFoundError:
            self._tokenizer_path = _locate(self._model_path.parent.parent, "tokenizer.json")
        self._num_threads = num_threads or 0

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self._num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(self._model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = [i.name for i in self._session.get_inputs()]
        unknown = [n for n in self._input_names if n not in _KNOWN_INPUTS]
        if unknown or "input_ids" not in self._input_names:
            raise ValueError(
                f"{self._model_path}: model inputs {self._input_names} are not a BERT-style "
                f"text encoder's (expected input_ids and optionally {_KNOWN_INPUTS[1:]})"
            )
        outputs = {o.name: o for o in self._session.get_outputs()}
        if config.output is not None:
            if config.output not in outputs:
                raise ValueError(
                    f"{self._model_path}: no output {config.output!r} (outputs: {list(outputs)})"
                )
            output = outputs[config.output]
        else:
            preferred = [n for n in ("last_hidden_state", "token_embeddings") if n in outputs]
            output = outputs[preferred[0]] if preferred else next(iter(outputs.values()))
        self._output_name: str = output.name
        # rank 2 = the model already pools ([batch, dim]); rank 3 = token outputs to pool
        self._pre_pooled = len(output.shape) == 2

        tokenizer = tokenizers.Tokenizer.from_file(str(self._tokenizer_path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=config.max_seq_length)
        self._tokenizer = tokenizer

        dim = config.dim
        if dim is None:
            last = output.shape[-1]
            dim = last if isinstance(last, int) else int(self._run_texts([""]).shape[1])
        self._dim = int(dim)
        self._fingerprints: dict[int, str] = {}
        self._hash_lock = threading.Lock()
        self._file_hashes: tuple[str, str] | None = None

    # ---------------------------------------------------------------- properties

    @property
    def name(self) -> str:
        """Readable model name (e.g. "all-MiniLM-L6-v2")."""
        return self._config.name

    @property
    def dim(self) -> int:
        """Full output dimension."""
        return self._dim

    @property
    def max_length(self) -> int:
        """Token limit (special tokens included); longer texts are truncated."""
        return self._config.max_seq_length

    @property
    def pooling(self) -> str:
        return self._config.pooling

    @property
    def normalize(self) -> bool:
        """True when the encoder L2-normalizes its vectors."""
        return self._config.normalize

    @property
    def query_prefix(self) -> str:
        return self._config.query_prefix

    @property
    def document_prefix(self) -> str:
        return self._config.document_prefix

    @property
    def distinguishes_input_types(self) -> bool:
        """True when queries and documents are encoded differently (e5, nomic...)."""
        return self._config.distinguishes_input_types

    @property
    def config(self) -> EncoderConfig:
        return self._config

    @property
    def model_path(self) -> Path:
        return self._model_path

    @property
    def num_threads(self) -> int:
        """onnxruntime intra-op threads (0 = onnxruntime's default, one per physical core)."""
        return self._num_threads

    @property
    def fingerprint(self) -> str:
        """Identity of the vectors :meth:`encode` returns at full dimension."""
        return self.fingerprint_for(None)

    def fingerprint_for(self, dims: int | None) -> str:
        """Identity of the vectors ``encode(..., dims=dims)`` returns.

        ``"<name>:<dims>d:<hash>"``; the hash covers the model file's and tokenizer's sha256,
        pooling, normalization, dims, max length, prefixes and the pooled output.
        """
        width = self._check_dims(dims)
        cached = self._fingerprints.get(width)
        if cached is not None:
            return cached
        model_sha, tokenizer_sha = self._hashes()
        identity = {
            "model_sha256": model_sha,
            "tokenizer_sha256": tokenizer_sha,
            "pooling": "model" if self._pre_pooled else self._config.pooling,
            "normalize": self._config.normalize,
            "dims": width,
            "max_seq_length": self._config.max_seq_length,
            "query_prefix": self._config.query_prefix,
            "document_prefix": self._config.document_prefix,
            "output": self._output_name,
        }
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
        fingerprint = f"{self.name}:{width}d:{hashlib.sha256(blob).hexdigest()[:24]}"
        self._fingerprints[width] = fingerprint
        return fingerprint

    def _hashes(self) -> tuple[str, str]:
        with self._hash_lock:
            if self._file_hashes is None:
                self._file_hashes = (
                    _sha256_file(self._model_path),
                    _sha256_file(self._tokenizer_path),
                )
            return self._file_hashes

    def __repr__(self) -> str:
        return (
            f"Encoder(name={self.name!r}, dim={self.dim}, pooling={self.pooling!r}, "
            f"normalize={self.normalize}, max_length={self.max_length})"
        )

    # ---------------------------------------------------------------- encoding

    def prefix_for(self, input_type: str) -> str:
        """The text prepended to inputs of this type ("" for models without prefixes)."""
        if input_type not in _INPUT_TYPES:
            raise ValueError(f"input_type: expected 'document' or 'query', got {input_type!r}")
        if input_type == "query":
            return self._config.query_prefix
        return self._config.document_prefix

    def _check_dims(self, dims: int | None) -> int:
        if dims is None:
            return self._dim
        if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)):
            raise TypeError(f"dims: expected an int or None, got {type(dims).__name__}")
        if not 1 <= dims <= self._dim:
            raise ValueError(
                f"dims: must be between 1 and {self._dim} (the model's dimension), got {dims}"
            )
        return int(dims)

    def encode(
        self,
        texts: str | Iterable[str],
        input_type: str = "document",
        dims: int | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> np.ndarray:
        """Sentence vectors, float32 ``[n, dims or dim]``, in the order of ``texts``.

        A single string gives one row. ``input_type`` ("document" or "query") applies the
        model's own prefix. ``dims`` keeps the first ``dims`` components (Matryoshka-style) and
        re-normalizes them when the encoder normalizes. Texts are sorted by token length before
        batching, so batches carry little padding; ``progress=True`` shows a tqdm bar.
        """
        items = _as_texts(texts)
        prefix = self.prefix_for(input_type)
        width = self._check_dims(dims)
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
        result = np.empty((len(items), width), dtype=np.float32)
        if not items:
            return result
        bar = None
        if progress:
            tqdm = _require("tqdm").tqdm
            bar = tqdm(total=len(items), desc=f"encoding ({self.name})", unit="text")
        try:
            for start in range(0, len(items), _WINDOW):
                window = items[start : start + _WINDOW]
                if prefix:
                    window = [prefix + text for text in window]
                encodings = self._tokenizer.encode_batch(window)
                lengths = np.fromiter(
                    (len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings)
                )
                order = np.argsort(-lengths, kind="stable")
                for first in range(0, len(order), batch_size):
                    rows = order[first : first + batch_size]
                    batch = [encodings[i] for i in rows]
                    result[start + rows] = self._embed(batch, int(lengths[rows[0]]), width)
                    if bar is not None:
                        bar.update(len(rows))
        finally:
            if bar is not None:
                bar.close()
        return result

    def _run_texts(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        pooled = self._pool(*self._forward(encodings, width))
        return pooled

    def _forward(self, encodings: Sequence[Any], width: int) -> tuple[np.ndarray, np.ndarray]:
        count = len(encodings)
        ids = np.zeros((count, width), dtype=np.int64)
        mask = np.zeros((count, width), dtype=np.int64)
        wants_types = "token_type_ids" in self._input_names
        types = np.zeros((count, width), dtype=np.int64) if wants_types else None
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            if types is not None:
                types[row, :n] = encoding.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        inputs = {name: feeds[name] for name in self._input_names}
        (output,) = self._session.run([self._output_name], inputs)
        return np.asarray(output, dtype=np.float32), mask

    def _pool(self, output: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._pre_pooled:
            return output
        if self._config.pooling == "cls":
            return output[:, 0, :]
        weights = mask.astype(np.float32)
        summed = np.matmul(weights[:, None, :], output)[:, 0, :]
        counts = np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
        pooled: np.ndarray = summed / counts
        return pooled

    def _embed(self, encodings: Sequence[Any], width: int, dims: int) -> np.ndarray:
        vectors = self._pool(*self._forward(encodings, width))[:, :dims]
        if self._config.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


_DEFAULT_ENCODER: Encoder | None = None
_DEFAULT_LOCK = threading.Lock()


def _as_texts(texts: str | Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError("texts: expected str or a sequence of str, got bytes (decode it first)")
    try:
        items = list(texts)
    except TypeError:
        raise TypeError(
            f"texts: expected str or a sequence of str, got {type(texts).__name__}"
        ) from None
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"texts[{index}]: expected str, got {type(item).__name__}")
    return items
