"""ONNX text encoder: sentence vectors from an ONNX sentence-embedding model, and their identity.

The encoder needs the optional dependencies onnxruntime and tokenizers (``pip install
'matry[encoder]'``). They are imported when an :class:`Encoder` is created, never when matry is
imported. A default model, all-MiniLM-L6-v2 (int8 ONNX, Apache-2.0), ships inside the package,
so ``Encoder()`` works offline; nothing is ever downloaded.

Bring your own model: :meth:`Encoder.from_dir` loads a sentence-transformers style ONNX export
(Optimum's ``last_hidden_state`` graphs, sentence-transformers' ``token_embeddings`` /
``sentence_embedding`` graphs, or any BERT-style graph with a token or sentence output), and
:meth:`Encoder.from_sentence_transformers` wraps a ``SentenceTransformer`` already in memory.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BUNDLED_MODEL",
    "POOLING_MODES",
    "Encoder",
    "EncoderConfig",
    "fingerprint_digest",
    "fingerprints_match",
    "sentence_transformers_fingerprint",
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

#: Pooling modes, in the order sentence-transformers concatenates them when several are set
#: ("cls+mean" = the CLS vector followed by the mean vector).
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
#: sentence-transformers' 1_Pooling/config.json keys for each mode.
_ST_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: Output names that say what they hold, in order of preference: a sentence vector the graph
#: already pooled, then token vectors to pool. (Optimum's ``pooler_output`` is BERT's
#: tanh(dense(CLS)) head, not a sentence embedding: it is used only when asked for by name.)
_SENTENCE_OUTPUTS = ("sentence_embedding",)
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
_NOT_SENTENCE_OUTPUTS = ("pooler_output",)
#: sentence-transformers modules whose effect matry reproduces on token outputs.
_KNOWN_ST_MODULES = ("Transformer", "Pooling", "Normalize")


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


def _fingerprint(label: str, dims: int, identity: Mapping[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str).encode()
    return f"{label}:{dims}d:{hashlib.sha256(blob).hexdigest()[:24]}"


def sentence_transformers_fingerprint(
    name: str,
    revision: str | None,
    config: Mapping[str, Any],
    dims: int,
    *,
    weights_sha256: str | None = None,
) -> str:
    """Fingerprint of the vectors a sentence-transformers model makes, from plain data.

    ``name`` is the model id ("sentence-transformers/all-MiniLM-L6-v2") or path, ``revision``
    the hub commit its files came from, ``config`` everything that shapes the vectors (modules
    and their configs, the transformer config, max length, prompts...), ``dims`` the vector
    width. Without a revision, the same name can hold other weights (a local directory, a model
    fine-tuned in memory): ``weights_sha256`` (a digest of the parameters) must identify them.
    The readable part is the last component of ``name``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty str, got {name!r}")
    if revision is None and weights_sha256 is None:
        raise ValueError(
            "revision: unknown, and no weights_sha256 given: without one of them the "
            "fingerprint cannot tell these weights from other weights of the same name"
        )
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or dims < 1:
        raise ValueError(f"dims: must be a positive int, got {dims!r}")
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a mapping, got {type(config).__name__}")
    identity = {
        "source": "sentence-transformers",
        "model": name,
        "revision": revision,
        "weights_sha256": weights_sha256,
        "config": dict(config),
        "dims": int(dims),
    }
    label = name.rstrip("/").rsplit("/", 1)[-1] or name
    return _fingerprint(label, int(dims), identity)


def _check_pooling(pooling: str) -> list[str]:
    if not isinstance(pooling, str):
        raise TypeError(f"pooling: expected a str, got {type(pooling).__name__}")
    if pooling == "model":
        return []
    modes = pooling.split("+")
    if any(m not in POOLING_MODES for m in modes) or len(set(modes)) != len(modes):
        raise ValueError(
            f"pooling: expected one of {POOLING_MODES} (several distinct ones joined by '+', "
            f"concatenated in that order), got {pooling!r}"
        )
    return modes


@dataclass(frozen=True)
class EncoderConfig:
    """How a model's token outputs become sentence vectors."""

    name: str
    #: One of :data:`POOLING_MODES`, several joined by "+" (concatenated in that order), or
    #: "model" (the model pools itself: sentence-transformers models in memory).
    pooling: str
    normalize: bool  # L2-normalize the sentence vectors
    max_seq_length: int  # tokens, special tokens included; longer input is truncated
    query_prefix: str = ""
    document_prefix: str = ""
    output: str | None = None  # name of the model output to pool; None = pick automatically
    dim: int | None = None  # full output dimension; None = read from the model
    #: False: the prefix's tokens are left out of the pooling (instructor-style models).
    include_prompt: bool = True

    def __post_init__(self) -> None:
        _check_pooling(self.pooling)
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


def _pooling_from_st_config(pooling: Mapping[str, Any], where: str) -> str:
    """The pooling string ("mean", "cls+mean"...) of a sentence-transformers Pooling config:
    ``pooling_mode`` (a name or a list, sentence-transformers >= 6) or the older
    ``pooling_mode_*`` booleans (concatenated in sentence-transformers' fixed order)."""
    if "pooling_mode" in pooling:
        named = pooling["pooling_mode"]
        modes = [named] if isinstance(named, str) else list(named or [])
        if not modes or any(not isinstance(m, str) or m not in POOLING_MODES for m in modes):
            raise ValueError(
                f"{where}: pooling_mode {named!r} is not supported (matry pools "
                f"{', '.join(POOLING_MODES)})"
            )
        return "+".join(modes)
    unknown = sorted(
        k
        for k, v in pooling.items()
        if k.startswith("pooling_mode") and v and k not in _ST_POOLING_KEYS
    )
    if unknown:
        raise ValueError(
            f"{where}: pooling {unknown} is not supported (matry pools {', '.join(POOLING_MODES)})"
        )
    modes = [mode for key, mode in _ST_POOLING_KEYS.items() if pooling.get(key)]
    if not modes:
        raise ValueError(f"{where}: no pooling_mode_* is set to true")
    return "+".join(m for m in POOLING_MODES if m in modes)


def _sentence_transformers_settings(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Settings found in the files a sentence-transformers export writes (all optional), and
    hints for choosing the output: the token width and modules matry does not apply."""
    found: dict[str, Any] = {}
    hints: dict[str, Any] = {"unapplied_modules": []}
    modules_file = directory / "modules.json"
    pooling_dir = directory / "1_Pooling"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        if not isinstance(modules, list):
            raise ValueError(f"{modules_file}: expected a JSON list of modules")
        found["normalize"] = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        for module in modules:
            kind = str(module.get("type", ""))
            if kind.endswith("Pooling") and module.get("path"):
                pooling_dir = directory / str(module["path"])
            if kind.rsplit(".", 1)[-1] not in _KNOWN_ST_MODULES:
                hints["unapplied_modules"].append(f"{kind} ({module.get('path', '')})")
    pooling_file = pooling_dir / "config.json"
    if pooling_file.is_file():
        pooling = _read_json(pooling_file)
        found["pooling"] = _pooling_from_st_config(pooling, str(pooling_file))
        if "include_prompt" in pooling:
            found["include_prompt"] = bool(pooling["include_prompt"])
        for key in ("embedding_dimension", "word_embedding_dimension"):
            if key in pooling:
                hints["token_dim"] = int(pooling[key])
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        max_seq_length = _read_json(st_config).get("max_seq_length")
        if max_seq_length:
            found["max_seq_length"] = int(max_seq_length)
    prompts_file = directory / "config_sentence_transformers.json"
    if prompts_file.is_file():
        prompts = _read_json(prompts_file).get("prompts") or {}
        query, document = _prompts_for(prompts)
        if query is not None:
            found["query_prefix"] = query
        if document is not None:
            found["document_prefix"] = document
    if "max_seq_length" not in found and (directory / "tokenizer_config.json").is_file():
        limit = _read_json(directory / "tokenizer_config.json").get("model_max_length")
        if isinstance(limit, int) and 2 <= limit <= 100_000:
            found["max_seq_length"] = limit
    return found, hints


def _prompts_for(prompts: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(query prefix, document prefix) from a sentence-transformers prompts dict."""
    query = str(prompts["query"]) if "query" in prompts else None
    document = None
    for key in ("document", "passage", "corpus"):
        if key in prompts:
            document = str(prompts[key])
            break
    return query, document


def _locate(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / "onnx" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: no {name} (looked in the directory and in onnx/)")


def _describe(args: Sequence[Any]) -> str:
    """ "input_ids int64 [batch, sequence], ..." for onnxruntime NodeArgs."""
    parts = []
    for arg in args:
        kind = str(arg.type).replace("tensor(", "").rstrip(")")
        shape = "?" if arg.shape is None else "[" + ", ".join(str(d) for d in arg.shape) + "]"
        parts.append(f"{arg.name} {kind} {shape}")
    return ", ".join(parts) or "(none)"


class Encoder:
    """Sentence vectors from a sentence-embedding model: an ONNX export run with onnxruntime on
    the CPU, or a sentence-transformers model already in memory.

    ``Encoder()`` loads the bundled all-MiniLM-L6-v2; ``Encoder("path/to/dir")`` or
    :meth:`from_dir` loads any sentence-transformers style ONNX export;
    :meth:`from_sentence_transformers` wraps a loaded ``SentenceTransformer``.

    ``encode`` tokenizes (truncating at :attr:`max_length` tokens), runs the model, pools (as
    the model's config says: mean over the attention mask, CLS, max, last token...) and
    L2-normalizes when the model does, returning float32 ``[n, dim]``. Vectors are comparable
    only with vectors of the same :attr:`fingerprint` (see :meth:`fingerprint_for` for truncated
    dims).
    """

    _st_model: Any = None

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
        config, hints = self._read_config(directory, {})
        self._setup(directory, config, hints, num_threads)

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
        output_name: str | None = None,
    ) -> Encoder:
        """Load an ONNX export: model.onnx and tokenizer.json (also under onnx/), plus settings.

        Settings are read from matry's ``encoder_config.json`` if present, else from the
        sentence-transformers files (``modules.json``: a ``Normalize`` module means
        L2-normalized vectors; ``1_Pooling/config.json``: the pooling mode, one of
        :data:`POOLING_MODES` or several concatenated; ``sentence_bert_config.json``: the max
        length; ``config_sentence_transformers.json``: query / document prompts). Keyword
        arguments override what the files say; a setting found nowhere must be passed.

        The model output is chosen by name, never by position: ``sentence_embedding`` (a
        vector the graph already pooled), then ``last_hidden_state`` or ``token_embeddings``
        (token vectors, pooled as configured). Otherwise by shape: the one rank-3 ``[batch,
        seq, hidden]`` output is pooled, or the one rank-2 ``[batch, hidden]`` output is used as
        the sentence vector (``pooler_output``, BERT's pooler head, is never picked unless
        named). ``output_name=`` picks an output explicitly. Inputs: ``input_ids``,
        ``attention_mask``, and ``token_type_ids`` when the graph has it. When nothing fits, the
        error lists the model's inputs and outputs with their shapes.
        """
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"path: {str(path)!r} is not a directory")
        if output_name is not None and (not isinstance(output_name, str) or not output_name):
            raise ValueError(f"output_name: expected a non-empty str, got {output_name!r}")
        if pooling is not None:
            _check_pooling(pooling)
        overrides = {
            "name": name,
            "pooling": pooling,
            "normalize": normalize,
            "max_seq_length": max_length,
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
            "output": output_name,
        }
        config, hints = cls._read_config(
            directory, {k: v for k, v in overrides.items() if v is not None}
        )
        encoder = cls.__new__(cls)
        encoder._setup(directory, config, hints, num_threads)
        return encoder

    @classmethod
    def from_sentence_transformers(cls, model: Any, *, name: str | None = None) -> Encoder:
        """Wrap a loaded ``sentence_transformers.SentenceTransformer`` (any backend).

        Vectors come from the model's own ``encode`` (its tokenizer, pooling, Normalize and
        Dense modules, and its torch, ONNX or OpenVINO backend), with the model's ``query`` and
        ``document`` (or ``passage`` / ``corpus``) prompts as the two input types. The
        fingerprint (see :func:`sentence_transformers_fingerprint`) is taken from the model's
        name (``model_card_data.model_id`` or ``base_model``, else the transformer's
        ``name_or_path``), its hub revision (``model_card_data.base_model_revision`` or the
        transformer config's commit hash) and its configuration (every module's type and
        config, the transformer config, max length, prompts, truncate_dim); with no revision
        known it also covers a sha256 of the weights. sentence_transformers is not imported by
        matry: the model is used through its own methods. ``name`` overrides the readable name.
        """
        if not any(
            klass.__module__.split(".")[0] == "sentence_transformers"
            for klass in type(model).__mro__
        ) or not callable(getattr(model, "encode", None)):
            raise TypeError(
                "model: expected a sentence_transformers.SentenceTransformer, got "
                f"{type(model).__module__}.{type(model).__qualname__}"
            )
        encoder = cls.__new__(cls)
        encoder._setup_sentence_transformers(model, name)
        return encoder

    @staticmethod
    def _read_config(
        directory: Path, overrides: dict[str, Any]
    ) -> tuple[EncoderConfig, dict[str, Any]]:
        config_file = directory / _CONFIG_FILE
        hints: dict[str, Any] = {"unapplied_modules": []}
        if config_file.is_file():
            settings = _read_json(config_file)
        else:
            settings, hints = _sentence_transformers_settings(directory)
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
        return EncoderConfig(**{k: v for k, v in settings.items() if k in fields}), hints

    def _setup(
        self,
        directory: Path,
        config: EncoderConfig,
        hints: dict[str, Any],
        num_threads: int | None,
    ) -> None:
        ort = _require("onnxruntime")
        tokenizers = _require("tokenizers")
        if num_threads is not None and num_threads < 0:
            raise ValueError(
                f"num_threads: must be >= 0 (0 = onnxruntime default), got {num_threads}"
            )
        if config.pooling == "model":
            raise ValueError(
                "pooling: 'model' is for sentence-transformers models in memory; an ONNX export "
                f"needs one of {POOLING_MODES}"
            )
        self._config = config
        self._directory = directory
        self._model_path: Path | None = _locate(directory, "model.onnx")
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
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        self._input_names = [i.name for i in inputs]
        layout = f"inputs: {_describe(inputs)}; outputs: {_describe(outputs)}"
        unknown = [n for n in self._input_names if n not in _KNOWN_INPUTS]
        if unknown or "input_ids" not in self._input_names:
            raise ValueError(
                f"{self._model_path}: model inputs {self._input_names} are not a BERT-style "
                f"text encoder's (expected input_ids and optionally {_KNOWN_INPUTS[1:]}); "
                f"{layout}"
            )

        tokenizer = tokenizers.Tokenizer.from_file(str(self._tokenizer_path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=config.max_seq_length)
        self._tokenizer = tokenizer

        ranks = {o.name: len(o.shape) for o in outputs if o.shape}
        widths = {o.name: o.shape[-1] for o in outputs if o.shape}
        if len(ranks) < len(outputs):  # some output has no declared shape: run it once
            for o, value in zip(outputs, self._probe([o.name for o in outputs])):
                ranks[o.name] = value.ndim
                widths[o.name] = value.shape[-1] if value.ndim else None
        self._output_name, self._pre_pooled = _choose_output(
            ranks, widths, config.output, hints.get("token_dim"), layout, str(self._model_path)
        )
        self._pool_modes = [] if self._pre_pooled else _check_pooling(config.pooling)
        unapplied = hints.get("unapplied_modules") or []
        if unapplied and not self._pre_pooled:
            raise ValueError(
                f"{directory}: modules.json lists {unapplied}, which matry does not apply to the "
                f"token output {self._output_name!r}; export a graph that includes them (a "
                f"[batch, dim] sentence output) and pass output_name=<its name>. {layout}"
            )
        if not config.include_prompt and self._pre_pooled:
            raise ValueError(
                f"{directory}: include_prompt=false needs token outputs to pool, but "
                f"{self._output_name!r} is already pooled"
            )

        dim = config.dim
        if dim is None:
            width = widths[self._output_name]
            if isinstance(width, int):
                dim = width * max(1, len(self._pool_modes))
            else:
                dim = int(self._run_texts([""]).shape[1])
        self._dim = int(dim)
        self._prompt_lengths: dict[str, int] = {}
        self._fingerprints: dict[int, str] = {}
        self._hash_lock = threading.Lock()
        self._file_hashes: tuple[str, str] | None = None

    def _setup_sentence_transformers(self, model: Any, name: str | None) -> None:
        modules = list(model)
        module_names = [type(m).__name__ for m in modules]
        normalize = "Normalize" in module_names
        pooling = "model"
        for module in modules:
            if type(module).__name__ == "Pooling" and hasattr(module, "get_config_dict"):
                pooling = _pooling_from_st_config(module.get_config_dict(), "the Pooling module")
        prompts = dict(getattr(model, "prompts", None) or {})
        query, document = _prompts_for(prompts)
        card = getattr(model, "model_card_data", None)
        transformer = next((m for m in modules if hasattr(m, "auto_model")), None)
        hf_config = getattr(getattr(transformer, "auto_model", None), "config", None)
        model_id = (
            getattr(card, "model_id", None)
            or getattr(card, "base_model", None)
            or getattr(hf_config, "name_or_path", None)
            or getattr(hf_config, "_name_or_path", None)
            or type(model).__name__
        )
        revision = getattr(card, "base_model_revision", None) or getattr(
            hf_config, "_commit_hash", None
        )
        max_length = int(getattr(model, "max_seq_length", None) or 512)
        self._st_model = model
        self._st_model_id = str(model_id)
        self._st_revision = None if revision is None else str(revision)
        self._config = EncoderConfig(
            name=name or self._st_model_id.rstrip("/").rsplit("/", 1)[-1],
            pooling=pooling,
            normalize=normalize,
            max_seq_length=max(2, max_length),
            query_prefix=query or "",
            document_prefix=document or "",
        )
        self._st_config = {
            "modules": [
                {
                    "type": f"{type(m).__module__}.{type(m).__qualname__}",
                    "config": m.get_config_dict() if hasattr(m, "get_config_dict") else None,
                }
                for m in modules
            ],
            "transformer_config": None
            if hf_config is None
            else {
                k: v
                for k, v in hf_config.to_dict().items()
                if not k.startswith("_") and k != "transformers_version"
            },
            "max_seq_length": max_length,
            "prompts": {"query": self._config.query_prefix, "document": document or ""},
            "truncate_dim": getattr(model, "truncate_dim", None),
        }
        self._model_path = None
        self._num_threads = 0
        self._input_names = []
        self._pre_pooled = True
        self._pool_modes = []
        self._output_name = "sentence_embedding"
        dimension = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        dim = dimension() if callable(dimension) else None
        if not dim:
            dim = int(np.asarray(model.encode(["probe"], convert_to_numpy=True)).shape[1])
        self._dim = int(dim)
        self._prompt_lengths = {}
        self._fingerprints = {}
        self._hash_lock = threading.Lock()
        self._file_hashes = None
        self._weights_sha256: str | None = None

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
        """Pooling mode(s) of the config ("model" for a sentence-transformers model)."""
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
    def model_path(self) -> Path | None:
        """The ONNX file (None for a sentence-transformers model in memory)."""
        return self._model_path

    @property
    def output_name(self) -> str:
        """The model output the vectors come from."""
        return self._output_name

    @property
    def pre_pooled(self) -> bool:
        """True when that output is already a sentence vector (no pooling by matry)."""
        return self._pre_pooled

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

        ``"<name>:<dims>d:<hash>"``; for an ONNX model the hash covers the model file's and
        tokenizer's sha256, pooling, normalization, dims, max length, prefixes and the pooled
        output; for a sentence-transformers model see :func:`sentence_transformers_fingerprint`.
        """
        width = self._check_dims(dims)
        cached = self._fingerprints.get(width)
        if cached is not None:
            return cached
        if self._st_model is not None:
            fingerprint = self._st_fingerprint(width)
        else:
            model_sha, tokenizer_sha = self._hashes()
            identity: dict[str, Any] = {
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
            if not self._config.include_prompt:  # absent by default: older fingerprints stay
                identity["include_prompt"] = False
            fingerprint = _fingerprint(self.name, width, identity)
        self._fingerprints[width] = fingerprint
        return fingerprint

    def _st_fingerprint(self, width: int) -> str:
        weights = None
        if self._st_revision is None:
            with self._hash_lock:
                if self._weights_sha256 is None:
                    self._weights_sha256 = _state_dict_sha256(self._st_model)
                weights = self._weights_sha256
        config = dict(self._st_config, normalize=self._config.normalize)
        fingerprint = sentence_transformers_fingerprint(
            self._st_model_id, self._st_revision, config, width, weights_sha256=weights
        )
        # the readable label follows the encoder's name (which `name=` may override)
        return f"{self.name}:{width}d:{fingerprint_digest(fingerprint)}"

    def _hashes(self) -> tuple[str, str]:
        assert self._model_path is not None  # ONNX encoders only
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
        if self._st_model is not None:
            return self._encode_sentence_transformers(items, prefix, width, batch_size, progress)
        skip = self._prompt_length(input_type)
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
                    result[start + rows] = self._embed(batch, int(lengths[rows[0]]), width, skip)
                    if bar is not None:
                        bar.update(len(rows))
        finally:
            if bar is not None:
                bar.close()
        return result

    def _token_counts(self, texts: Sequence[str], input_type: str = "document") -> np.ndarray:
        """Tokens per text as encode() would feed them (characters for a model in memory)."""
        prefix = self.prefix_for(input_type)
        if self._st_model is not None:
            return np.fromiter((len(prefix) + len(t) for t in texts), np.int64, len(texts))
        counts = np.empty(len(texts), dtype=np.int64)
        for start in range(0, len(texts), _WINDOW):
            window = [prefix + text for text in texts[start : start + _WINDOW]]
            encodings = self._tokenizer.encode_batch(window)
            counts[start : start + len(window)] = [len(e.ids) for e in encodings]
        return counts

    def _encode_sentence_transformers(
        self, items: list[str], prefix: str, width: int, batch_size: int, progress: bool
    ) -> np.ndarray:
        # prompt= (also when empty) keeps the model's default prompt out and lets it drop the
        # prompt's tokens from pooling where its Pooling says include_prompt=False
        raw = self._st_model.encode(
            items,
            prompt=prefix,
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        vectors = np.asarray(raw, dtype=np.float32).reshape(len(items), -1)
        if vectors.shape[1] != self._dim:
            raise RuntimeError(
                f"the sentence-transformers model returned {vectors.shape[1]}-d vectors, "
                f"expected {self._dim}"
            )
        return _finish(vectors[:, :width], self._config.normalize)

    def _prompt_length(self, input_type: str) -> int:
        """Leading tokens left out of pooling (include_prompt=False): CLS plus the prefix's
        tokens, counted as sentence-transformers counts them."""
        if self._config.include_prompt:
            return 0
        prefix = self.prefix_for(input_type)
        if not prefix:
            return 0
        if prefix not in self._prompt_lengths:
            self._prompt_lengths[prefix] = max(0, len(self._tokenizer.encode(prefix).ids) - 1)
        return self._prompt_lengths[prefix]

    def _probe(self, names: list[str]) -> list[np.ndarray]:
        encodings = self._tokenizer.encode_batch(["probe"])
        feeds, _ = self._feeds(encodings, max(1, len(encodings[0].ids)))
        return [np.asarray(v) for v in self._session.run(names, feeds)]

    def _run_texts(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        width = max(1, max(len(e.ids) for e in encodings))
        return self._pool(*self._forward(encodings, width), 0)

    def _feeds(
        self, encodings: Sequence[Any], width: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
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
        return {name: feeds[name] for name in self._input_names}, mask  # type: ignore[misc]

    def _forward(self, encodings: Sequence[Any], width: int) -> tuple[np.ndarray, np.ndarray]:
        inputs, mask = self._feeds(encodings, width)
        (output,) = self._session.run([self._output_name], inputs)
        return np.asarray(output, dtype=np.float32), mask

    def _pool(self, output: np.ndarray, mask: np.ndarray, skip: int) -> np.ndarray:
        if self._pre_pooled:
            if output.ndim != 2:
                raise RuntimeError(
                    f"output {self._output_name!r} has shape {output.shape}, expected [batch, dim]"
                )
            return output
        if output.ndim != 3:
            raise RuntimeError(
                f"output {self._output_name!r} has shape {output.shape}, expected "
                "[batch, sequence, hidden]"
            )
        if skip:
            mask = mask.copy()
            mask[:, :skip] = 0
        parts = [_pool_tokens(output, mask, mode) for mode in self._pool_modes]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _embed(self, encodings: Sequence[Any], width: int, dims: int, skip: int) -> np.ndarray:
        vectors = self._pool(*self._forward(encodings, width), skip)[:, :dims]
        return _finish(vectors, self._config.normalize)


def _finish(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def _pool_tokens(output: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """One sentence-transformers pooling mode over token vectors [batch, seq, hidden]."""
    rows = np.arange(output.shape[0])
    if mode == "cls":
        # the first token the pooling keeps: token 0, or the first after an excluded prompt
        # (as sentence-transformers >= 6 does)
        first: np.ndarray = output[rows, np.argmax(mask, axis=1)]
        return first
    weights = mask.astype(np.float32)
    if mode == "max":
        masked = np.where(weights[:, :, None] > 0, output, np.float32(-1e9))
        largest: np.ndarray = masked.max(axis=1)
        return largest
    if mode == "lasttoken":
        seq = mask.shape[1]
        flipped = mask[:, ::-1]
        last = seq - 1 - np.argmax(flipped, axis=1)
        last = np.where(flipped.max(axis=1) == 0, seq - 1, last)
        picked: np.ndarray = output[rows, last] * weights[rows, last][:, None]
        return picked
    if mode == "weightedmean":
        weights = weights * np.arange(1, mask.shape[1] + 1, dtype=np.float32)[None, :]
    summed = np.matmul(weights[:, None, :], output)[:, 0, :]
    counts = np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    if mode == "mean_sqrt_len_tokens":
        scaled: np.ndarray = summed / np.sqrt(counts)
        return scaled
    pooled: np.ndarray = summed / counts  # mean, weightedmean
    return pooled


def _choose_output(
    ranks: Mapping[str, int],
    widths: Mapping[str, Any],
    requested: str | None,
    token_dim: int | None,
    layout: str,
    where: str,
) -> tuple[str, bool]:
    """(output name, already pooled) by name first, then by shape; never by position."""
    hint = (
        "pass output_name=<name> to Encoder.from_dir (a [batch, sequence, hidden] output is "
        "pooled as configured, a [batch, hidden] output is used as the sentence vector)"
    )
    if requested is not None:
        if requested not in ranks:
            raise ValueError(f"{where}: output_name: no output {requested!r}; {layout}")
        if ranks[requested] not in (2, 3):
            raise ValueError(
                f"{where}: output {requested!r} has rank {ranks[requested]}, expected "
                f"[batch, hidden] or [batch, sequence, hidden]; {layout}"
            )
        return requested, ranks[requested] == 2
    for name in _SENTENCE_OUTPUTS:
        if ranks.get(name) == 2:
            return name, True
    for name in _TOKEN_OUTPUTS:
        if ranks.get(name) == 3:
            return name, False

    def fits(name: str) -> bool:
        width = widths.get(name)
        return token_dim is None or not isinstance(width, int) or width == token_dim

    tokens = [n for n, r in ranks.items() if r == 3 and fits(n)]
    if len(tokens) == 1:
        return tokens[0], False
    sentences = [n for n, r in ranks.items() if r == 2 and n not in _NOT_SENTENCE_OUTPUTS]
    if not tokens and len(sentences) == 1:
        return sentences[0], True
    why = (
        f"several outputs could hold the token vectors ({tokens})"
        if len(tokens) > 1
        else f"several outputs could hold the sentence vector ({sentences})"
        if len(sentences) > 1
        else "no output is named sentence_embedding, last_hidden_state or token_embeddings, "
        "and none has the shape of token or sentence vectors"
        + (f" (token width {token_dim} per 1_Pooling/config.json)" if token_dim else "")
    )
    raise ValueError(f"{where}: cannot choose the model output: {why}; {layout}; {hint}")


def _state_dict_sha256(model: Any) -> str:
    """sha256 over a torch module's parameter names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().float().numpy()
        digest.update(f"{key}:{tensor.dtype}:{tuple(array.shape)};".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


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
