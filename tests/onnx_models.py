"""Tiny sentence-transformers style ONNX exports for the tests, and their numpy reference.

Each export is a 2-layer BERT with hidden size 32 and seeded random weights, written with
matry's ONNX graph writer (``matry._onnx_writer``, the one that writes the bundled model) in a
chosen layout (which outputs, in which order, under which names; with or without a
token_type_ids input; model.onnx at the top or under onnx/), beside a small WordPiece
``tokenizer.json`` built in memory and the sentence-transformers config files. Nothing is
downloaded. The reference runs the float64 numpy forward pass of the same weights, one
unpadded sentence at a time, and pools it with plain numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matry._onnx_writer import BertConfig, build_bert_onnx, numpy_bert_forward, random_bert_weights

TINY = BertConfig(
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    layer_norm_eps=1e-12,
    max_position_embeddings=64,
)
MAX_SEQ_LENGTH = 48
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (  # noqa: SIM905 - a word list reads better as one string
    "the a an of to in on at is are was be and or not with for from by this that it as "
    "cat dog bird fish mat rug sofa house garden tree river city road car train boat plane "
    "sits runs flies swims sleeps eats reads writes plays sings works falls rises "
    "red blue green small big old new fast slow warm cold happy sad "
    "bank rate rates money market stock price bread dough oven flour recipe "
    "python code list reverse function error file query passage document question answer "
    "what how why where when who capital france paris weather sunny rain tomorrow today "
    "game match ball team win lose draw music song movie film book story"
).split()
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-")

#: Varied sentences (short, long, repeated words, unknown-ish words split into pieces).
TEXTS = [
    "The cat sits on the mat.",
    "A dog runs in the garden.",
    "",
    "what is the capital of france?",
    "Paris is the capital of France and a big old city.",
    "the bank rates rise and the stock market falls",
    "how to reverse a list in python code",
    "rain",
    "the the the the the the",
    "a small red boat on the cold river, a fast train on the road",
    "zebra xylophone quokka",  # out of vocabulary words: split into characters
    "Bread dough in a warm oven: flour, water and a recipe.",
    "sunny weather today; rain tomorrow",
    "the team plays the game and the match ends in a draw " * 3,  # truncated at 48 tokens
]


def write_tokenizer(path: Path) -> None:
    """A lower-casing WordPiece tokenizer with [CLS] ... [SEP] around every text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tokens = SPECIAL_TOKENS + WORDS + CHARACTERS + [f"##{c}" for c in CHARACTERS]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.save(str(path))


def vocab_size() -> int:
    return len(dict.fromkeys(SPECIAL_TOKENS + WORDS + CHARACTERS + [f"##{c}" for c in CHARACTERS]))


@dataclass(frozen=True)
class TinyExport:
    """A written export and what a reference needs to reproduce its vectors."""

    directory: Path
    weights: dict[str, np.ndarray]
    outputs: tuple[tuple[str, str], ...]

    @property
    def model_path(self) -> Path:
        for candidate in (self.directory / "model.onnx", self.directory / "onnx" / "model.onnx"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(self.directory)


def write_export(
    directory: Path,
    *,
    outputs: Sequence[tuple[str, str]] = (("last_hidden_state", "tokens"),),
    pooling: str | None = "mean",
    normalize: bool | None = True,
    token_type_ids: bool = True,
    seed: int = 0,
    onnx_subdir: bool = False,
    prompts: dict[str, str] | None = None,
    include_prompt: bool | None = None,
    extra_modules: Sequence[str] = (),
) -> TinyExport:
    """Writes a sentence-transformers style export of a tiny random BERT.

    ``pooling``: matry pooling string written to 1_Pooling/config.json ("cls+mean" sets two
    modes), None = no pooling config. ``normalize``: a Normalize module in modules.json (None =
    no modules.json at all). ``extra_modules``: more module types listed after Pooling.
    """
    directory.mkdir(parents=True, exist_ok=True)
    weights = random_bert_weights(TINY, vocab_size(), seed=seed)
    model_dir = directory / "onnx" if onnx_subdir else directory
    model_dir.mkdir(exist_ok=True)
    model = build_bert_onnx(
        weights,
        TINY,
        outputs=tuple(outputs),
        token_type_ids=token_type_ids,
        graph_name=f"tiny-bert-{seed}",
        producer_name="matry tests/onnx_models.py",
    )
    (model_dir / "model.onnx").write_bytes(model.SerializeToString())
    write_tokenizer(directory / "tokenizer.json")
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "hidden_size": TINY.hidden_size,
                "num_hidden_layers": TINY.num_layers,
                "num_attention_heads": TINY.num_heads,
                "intermediate_size": TINY.intermediate_size,
                "max_position_embeddings": TINY.max_position_embeddings,
                "vocab_size": vocab_size(),
            }
        )
    )
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    )
    if normalize is not None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
        ]
        for extra in extra_modules:
            index = len(modules)
            modules.append(
                {"idx": index, "name": str(index), "path": f"{index}_{extra}", "type": extra}
            )
        if normalize:
            index = len(modules)
            modules.append(
                {
                    "idx": index,
                    "name": str(index),
                    "path": f"{index}_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                }
            )
        (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    if pooling is not None:
        modes = pooling.split("+")
        keys = {
            "cls": "pooling_mode_cls_token",
            "max": "pooling_mode_max_tokens",
            "mean": "pooling_mode_mean_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens",
            "lasttoken": "pooling_mode_lasttoken",
        }
        config: dict[str, object] = {"word_embedding_dimension": TINY.hidden_size}
        config.update({key: mode in modes for mode, key in keys.items()})
        if include_prompt is not None:
            config["include_prompt"] = include_prompt
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2))
    if prompts is not None:
        (directory / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": prompts, "default_prompt_name": None})
        )
    return TinyExport(directory, weights, tuple(outputs))


# ------------------------------------------------------------------ numpy reference


def tokenize(export: TinyExport, texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(export.directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
    return [(list(e.ids), list(e.type_ids)) for e in tokenizer.encode_batch(list(texts))]


def pool_reference(hidden: np.ndarray, mode: str, skip: int = 0) -> np.ndarray:
    """One pooling mode over the [seq, hidden] float64 states of one unpadded sentence;
    ``skip`` leading tokens are left out (include_prompt=False): "cls" takes the first token
    after them, as sentence-transformers >= 6 does."""
    if mode == "cls":
        return hidden[skip]
    if mode == "lasttoken":
        return hidden[-1]
    kept = hidden[skip:]
    if mode == "max":
        return kept.max(axis=0)
    if mode == "mean":
        return kept.mean(axis=0)
    if mode == "mean_sqrt_len_tokens":
        return kept.sum(axis=0) / math.sqrt(kept.shape[0])
    if mode == "weightedmean":
        positions = np.arange(skip + 1, hidden.shape[0] + 1, dtype=np.float64)
        return (positions[:, None] * kept).sum(axis=0) / positions.sum()
    raise AssertionError(mode)


def reference_vectors(
    export: TinyExport,
    texts: Sequence[str],
    *,
    pooling: str = "mean",
    normalize: bool = True,
    output_kind: str = "tokens",
    prefix: str = "",
    skip: int = 0,
) -> np.ndarray:
    """float64 sentence vectors of ``texts`` made from the same weights, without ONNX.

    ``output_kind``: the kind of the output the encoder should use ("tokens" = pool with
    ``pooling``; "mean" / "cls" / "pooler" = what the graph pooled itself).
    """
    w = {k: v.astype(np.float64) for k, v in export.weights.items()}
    rows = []
    for ids, type_ids in tokenize(export, [prefix + text for text in texts]):
        hidden = numpy_bert_forward(export.weights, TINY, ids, type_ids)
        if output_kind == "tokens":
            vector = np.concatenate([pool_reference(hidden, m, skip) for m in pooling.split("+")])
        elif output_kind == "mean":
            vector = hidden.mean(axis=0)
        elif output_kind == "cls":
            vector = hidden[0]
        elif output_kind == "pooler":
            vector = np.tanh(w["pooler.dense.weight"] @ hidden[0] + w["pooler.dense.bias"])
        else:
            raise AssertionError(output_kind)
        if normalize:
            vector = vector / np.linalg.norm(vector)
        rows.append(vector)
    return np.stack(rows)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
