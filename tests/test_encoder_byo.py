"""Bring your own model: Encoder.from_dir on sentence-transformers style ONNX exports laid out
in different ways, checked against a float64 numpy forward pass of the same weights; and
Encoder.from_sentence_transformers with its fingerprint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from matry.encoder import (
    POOLING_MODES,
    Encoder,
    fingerprint_digest,
    fingerprints_match,
    sentence_transformers_fingerprint,
)
from onnx_models import TEXTS, cosines, reference_vectors, write_export

MIN_COSINE = 0.9999


def _check_against_reference(encoder: Encoder, expected: np.ndarray, batch_size: int = 4) -> float:
    """Every text's vector (encoded in padded, length-sorted batches) against the reference;
    returns the smallest cosine."""
    vectors = encoder.encode(TEXTS, batch_size=batch_size)
    assert vectors.shape == expected.shape
    assert vectors.dtype == np.float32
    found = cosines(vectors, expected)
    assert found.min() >= MIN_COSINE, list(zip(TEXTS, found))
    # same scale too, not only the same direction
    np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-5)
    return float(found.min())


def _report(label: str, cosine: float) -> None:
    print(f"{label}: min cosine to the reference {cosine:.12f} (1 - cos = {1 - cosine:.1e})")


# ------------------------------------------------------------------ the three layouts


def test_extra_output_listed_first_and_mean_pooling(tmp_path: Path) -> None:
    """Optimum-like: pooler_output (BERT's pooler head, rank 2) before last_hidden_state."""
    export = write_export(
        tmp_path / "optimum-like",
        outputs=[("pooler_output", "pooler"), ("last_hidden_state", "tokens")],
        pooling="mean",
        normalize=True,
    )
    encoder = Encoder.from_dir(export.directory)
    assert encoder.output_name == "last_hidden_state"
    assert not encoder.pre_pooled
    assert encoder.pooling == "mean" and encoder.normalize
    assert encoder.dim == 32 and encoder.max_length == 48
    cosine = _check_against_reference(encoder, reference_vectors(export, TEXTS, pooling="mean"))
    _report("layout a (pooler_output first, mean pooling)", cosine)


def test_pre_pooled_sentence_embedding_only(tmp_path: Path) -> None:
    """The graph pools itself and has a single [batch, hidden] output."""
    export = write_export(
        tmp_path / "pre-pooled",
        outputs=[("sentence_embedding", "mean")],
        pooling="cls",  # ignored: the output is already a sentence vector
        normalize=True,
    )
    encoder = Encoder.from_dir(export.directory)
    assert encoder.output_name == "sentence_embedding"
    assert encoder.pre_pooled
    cosine = _check_against_reference(encoder, reference_vectors(export, TEXTS, output_kind="mean"))
    _report("layout b (sentence_embedding only)", cosine)


def test_custom_output_name_cls_pooling_normalize_under_onnx_dir(tmp_path: Path) -> None:
    """Token output named 'hidden' (no known name: chosen by its rank-3 shape), CLS pooling from
    1_Pooling/config.json, a Normalize module, model.onnx under onnx/."""
    export = write_export(
        tmp_path / "custom-name",
        outputs=[("hidden", "tokens")],
        pooling="cls",
        normalize=True,
        onnx_subdir=True,
        seed=1,
    )
    encoder = Encoder.from_dir(export.directory)
    assert encoder.model_path == export.directory / "onnx" / "model.onnx"
    assert encoder.output_name == "hidden"
    assert encoder.pooling == "cls"
    cosine = _check_against_reference(encoder, reference_vectors(export, TEXTS, pooling="cls"))
    _report("layout c (output 'hidden', CLS, Normalize, onnx/)", cosine)


def test_no_token_type_ids_input(tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "no-types",
        outputs=[("last_hidden_state", "tokens")],
        token_type_ids=False,
        normalize=False,
        seed=2,
    )
    encoder = Encoder.from_dir(export.directory)
    assert not encoder.normalize
    reference = reference_vectors(export, TEXTS, normalize=False)
    _report(
        "layout d (no token_type_ids, no Normalize)", _check_against_reference(encoder, reference)
    )
    # not normalized: the lengths are the model's own
    assert not np.allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-2)


def test_sentence_transformers_own_layout_prefers_sentence_embedding(tmp_path: Path) -> None:
    """sentence-transformers' export: token_embeddings and sentence_embedding (and a cls
    output and the pooler as distractors)."""
    export = write_export(
        tmp_path / "st-layout",
        outputs=[
            ("token_embeddings", "tokens"),
            ("pooler_output", "pooler"),
            ("sentence_embedding", "mean"),
        ],
        pooling="mean",
    )
    encoder = Encoder.from_dir(export.directory)
    assert encoder.output_name == "sentence_embedding" and encoder.pre_pooled
    _check_against_reference(encoder, reference_vectors(export, TEXTS, output_kind="mean"))
    # the token output, pooled by matry, gives the same vectors
    tokens = Encoder.from_dir(export.directory, output_name="token_embeddings")
    assert not tokens.pre_pooled
    np.testing.assert_allclose(tokens.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5)
    assert not fingerprints_match(tokens.fingerprint, encoder.fingerprint)


# ------------------------------------------------------------------ pooling modes


@pytest.mark.parametrize("pooling", [*POOLING_MODES, "cls+mean", "max+mean+lasttoken"])
def test_every_pooling_mode_matches_the_reference(tmp_path: Path, pooling: str) -> None:
    export = write_export(tmp_path / "pool", pooling=pooling, normalize=False, seed=3)
    encoder = Encoder.from_dir(export.directory)
    assert encoder.pooling == pooling
    assert encoder.dim == 32 * len(pooling.split("+"))
    reference = reference_vectors(export, TEXTS, pooling=pooling, normalize=False)
    # batch sizes 1 (no padding) and 5 (padding in every batch) must agree with it
    _check_against_reference(encoder, reference, batch_size=1)
    _check_against_reference(encoder, reference, batch_size=5)


def test_sentence_transformers_6_pooling_config_with_modes_in_any_order(tmp_path: Path) -> None:
    """sentence-transformers >= 6 writes {"embedding_dimension", "pooling_mode", ...}; a list of
    modes is concatenated in the order given."""
    export = write_export(tmp_path / "st6", pooling=None, normalize=False, seed=7)
    (export.directory / "1_Pooling").mkdir()
    (export.directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {"embedding_dimension": 32, "pooling_mode": ["max", "cls"], "include_prompt": True}
        )
    )
    encoder = Encoder.from_dir(export.directory)
    assert encoder.pooling == "max+cls" and encoder.dim == 64
    reference = reference_vectors(export, TEXTS, pooling="max+cls", normalize=False)
    _check_against_reference(encoder, reference)
    (export.directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 32, "pooling_mode": "attention"})
    )
    with pytest.raises(ValueError, match="pooling_mode 'attention' is not supported"):
        Encoder.from_dir(export.directory)


def test_pooling_modes_give_distinct_vectors_and_fingerprints(tmp_path: Path) -> None:
    export = write_export(tmp_path / "modes", pooling="mean", seed=4)
    # unnormalized: mean and mean_sqrt_len_tokens differ only in length
    encoders = {
        m: Encoder.from_dir(export.directory, pooling=m, normalize=False) for m in POOLING_MODES
    }
    digests = {fingerprint_digest(e.fingerprint) for e in encoders.values()}
    assert len(digests) == len(POOLING_MODES)
    vectors = {m: e.encode(TEXTS[:4]) for m, e in encoders.items()}
    for a in POOLING_MODES:
        for b in POOLING_MODES:
            if a < b:
                assert not np.allclose(vectors[a], vectors[b], atol=1e-3), (a, b)


def test_include_prompt_false_leaves_the_prefix_out_of_the_pooling(tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "instructor-like",
        pooling="mean",
        prompts={"query": "question: ", "document": "passage: "},
        include_prompt=False,
        seed=5,
    )
    encoder = Encoder.from_dir(export.directory)
    assert encoder.config.include_prompt is False
    assert encoder.query_prefix == "question: "
    queries = encoder.encode(TEXTS, input_type="query")
    # [CLS] + "question" + ":" are the three leading tokens left out
    expected = reference_vectors(export, TEXTS, prefix="question: ", skip=3)
    assert cosines(queries, expected).min() >= MIN_COSINE
    with_prompt = reference_vectors(export, TEXTS, prefix="question: ")
    assert cosines(queries, with_prompt).min() < 0.999
    included = Encoder.from_dir(export.directory)
    assert fingerprints_match(included.fingerprint, encoder.fingerprint)
    bundled_style = write_export(tmp_path / "included", pooling="mean", seed=5)
    assert not fingerprints_match(
        Encoder.from_dir(bundled_style.directory).fingerprint, encoder.fingerprint
    )


# ------------------------------------------------------------------ choosing the output


def test_output_name_overrides_the_choice(tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "override",
        outputs=[("pooler_output", "pooler"), ("last_hidden_state", "tokens")],
    )
    pooler = Encoder.from_dir(export.directory, output_name="pooler_output")
    assert pooler.output_name == "pooler_output" and pooler.pre_pooled
    _check_against_reference(pooler, reference_vectors(export, TEXTS, output_kind="pooler"))
    default = Encoder.from_dir(export.directory)
    assert not fingerprints_match(pooler.fingerprint, default.fingerprint)
    with pytest.raises(ValueError, match=r"output_name: no output 'missing'.*last_hidden_state"):
        Encoder.from_dir(export.directory, output_name="missing")
    with pytest.raises(ValueError, match="output_name"):
        Encoder.from_dir(export.directory, output_name="")


def test_ambiguous_outputs_raise_an_error_that_lists_the_layout(tmp_path: Path) -> None:
    export = write_export(tmp_path / "ambiguous", outputs=[("a", "tokens"), ("b", "tokens")])
    with pytest.raises(ValueError) as caught:
        Encoder.from_dir(export.directory)
    message = str(caught.value)
    assert "several outputs could hold the token vectors (['a', 'b'])" in message
    assert "input_ids int64 [batch, sequence]" in message
    assert "token_type_ids int64 [batch, sequence]" in message
    assert "a float [batch, sequence, 32]" in message
    assert "b float [batch, sequence, 32]" in message
    assert "output_name=" in message
    chosen = Encoder.from_dir(export.directory, output_name="b")
    _check_against_reference(chosen, reference_vectors(export, TEXTS))


def test_only_a_pooler_output_is_not_taken_for_a_sentence_vector(tmp_path: Path) -> None:
    export = write_export(tmp_path / "pooler-only", outputs=[("pooler_output", "pooler")])
    with pytest.raises(ValueError) as caught:
        Encoder.from_dir(export.directory)
    message = str(caught.value)
    assert "pooler_output float [batch, 32]" in message
    assert "output_name=" in message
    # an unnamed rank-2 output, alone, is taken as the sentence vector
    other = write_export(tmp_path / "pooled-other-name", outputs=[("embedding", "cls")])
    encoder = Encoder.from_dir(other.directory)
    assert encoder.output_name == "embedding" and encoder.pre_pooled
    _check_against_reference(encoder, reference_vectors(other, TEXTS, output_kind="cls"))


def test_modules_matry_cannot_apply_are_refused_on_token_outputs(tmp_path: Path) -> None:
    dense = ["sentence_transformers.models.Dense"]
    export = write_export(tmp_path / "dense", extra_modules=dense)
    with pytest.raises(ValueError, match=r"Dense.*does not apply.*output_name="):
        Encoder.from_dir(export.directory)
    # a graph that pooled (and so applied its Dense layer) itself is fine
    pooled = write_export(
        tmp_path / "dense-in-graph",
        outputs=[("token_embeddings", "tokens"), ("sentence_embedding", "mean")],
        extra_modules=dense,
    )
    assert Encoder.from_dir(pooled.directory).output_name == "sentence_embedding"


def test_unknown_inputs_are_refused_with_the_layout(tmp_path: Path) -> None:
    import onnx

    export = write_export(tmp_path / "extra-input")
    model = onnx.load(str(export.model_path))
    model.graph.input.append(
        onnx.helper.make_tensor_value_info("position_ids", onnx.TensorProto.INT64, ["batch", 7])
    )
    onnx.save(model, str(export.model_path))
    with pytest.raises(ValueError, match=r"position_ids.*position_ids int64 \[batch, 7\]"):
        Encoder.from_dir(export.directory)


def test_settings_from_the_files_and_overrides(tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "settings", prompts={"query": "query: ", "passage": "passage: "}
    )
    encoder = Encoder.from_dir(export.directory)
    assert encoder.name == "settings"
    assert encoder.distinguishes_input_types
    assert encoder.document_prefix == "passage: "
    as_query = encoder.encode(TEXTS[:3], input_type="query")
    expected = reference_vectors(export, TEXTS[:3], prefix="query: ")
    assert cosines(as_query, expected).min() >= MIN_COSINE
    renamed = Encoder.from_dir(export.directory, name="mine", pooling="max", normalize=False)
    assert renamed.name == "mine" and renamed.pooling == "max" and not renamed.normalize
    with pytest.raises(ValueError, match="pooling"):
        Encoder.from_dir(export.directory, pooling="median")
    with pytest.raises(ValueError, match="distinct"):
        Encoder.from_dir(export.directory, pooling="mean+mean")
    # no modules.json and no pooling config: what to pass is named
    bare = write_export(tmp_path / "bare", pooling=None, normalize=None)
    with pytest.raises(ValueError, match="pooling='mean' or 'cls'.*normalize=True"):
        Encoder.from_dir(bare.directory)
    explicit = Encoder.from_dir(bare.directory, pooling="mean", normalize=True)
    _check_against_reference(explicit, reference_vectors(bare, TEXTS))


def test_building_a_tiny_export_is_fast(tmp_path: Path) -> None:
    write_export(tmp_path / "warm-up")
    started = time.perf_counter()
    write_export(tmp_path / "timed", outputs=[("a", "pooler"), ("b", "tokens"), ("c", "mean")])
    assert time.perf_counter() - started < 5.0  # ~0.1 s here; generous for a loaded machine


# ------------------------------------------------------------------ sentence-transformers


ST_CONFIG = {
    "modules": [
        {
            "type": "sentence_transformers.models.Transformer.Transformer",
            "config": {"max_seq_length": 256, "do_lower_case": False},
        },
        {
            "type": "sentence_transformers.models.Pooling.Pooling",
            "config": {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True},
        },
        {"type": "sentence_transformers.models.Normalize.Normalize", "config": {}},
    ],
    "transformer_config": {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6},
    "max_seq_length": 256,
    "prompts": {"query": "", "document": ""},
    "truncate_dim": None,
    "normalize": True,
}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
REVISION = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def test_sentence_transformers_fingerprint_from_plain_data() -> None:
    fingerprint = sentence_transformers_fingerprint(MINILM, REVISION, ST_CONFIG, 384)
    assert fingerprint.startswith("all-MiniLM-L6-v2:384d:")
    assert len(fingerprint_digest(fingerprint)) == 24
    # stable: same inputs (key order aside), same fingerprint
    reordered = dict(reversed(list(ST_CONFIG.items())))
    assert sentence_transformers_fingerprint(MINILM, REVISION, reordered, 384) == fingerprint
    changed = [
        sentence_transformers_fingerprint(MINILM, "0" * 40, ST_CONFIG, 384),
        sentence_transformers_fingerprint("someone/all-MiniLM-L6-v2", REVISION, ST_CONFIG, 384),
        sentence_transformers_fingerprint(MINILM, REVISION, ST_CONFIG, 128),
        sentence_transformers_fingerprint(
            MINILM, REVISION, dict(ST_CONFIG, max_seq_length=128), 384
        ),
        sentence_transformers_fingerprint(
            MINILM, REVISION, dict(ST_CONFIG, prompts={"query": "query: ", "document": ""}), 384
        ),
        sentence_transformers_fingerprint(MINILM, None, ST_CONFIG, 384, weights_sha256="ab" * 32),
    ]
    digests = {fingerprint_digest(f) for f in [fingerprint, *changed]}
    assert len(digests) == len(changed) + 1


def test_sentence_transformers_fingerprint_bad_input() -> None:
    with pytest.raises(ValueError, match="revision"):
        sentence_transformers_fingerprint(MINILM, None, ST_CONFIG, 384)
    with pytest.raises(ValueError, match="name"):
        sentence_transformers_fingerprint("", REVISION, ST_CONFIG, 384)
    with pytest.raises(ValueError, match="dims"):
        sentence_transformers_fingerprint(MINILM, REVISION, ST_CONFIG, 0)
    with pytest.raises(TypeError, match="config"):
        sentence_transformers_fingerprint(MINILM, REVISION, ["not", "a", "dict"], 384)  # type: ignore[arg-type]


def test_from_sentence_transformers_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="SentenceTransformer, got builtins.dict"):
        Encoder.from_sentence_transformers({"encode": None})
    with pytest.raises(TypeError, match="SentenceTransformer"):
        Encoder.from_sentence_transformers(Encoder.default())


def test_from_sentence_transformers_matches_the_onnx_export_of_the_same_weights(
    tmp_path: Path,
) -> None:
    """A real SentenceTransformer (torch) built from the tiny export's weights and tokenizer
    gives the vectors Encoder.from_dir gives for the ONNX graph of the same weights."""
    pytest.importorskip("sentence_transformers")
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules (the old path warns)
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models  # type: ignore[no-redef]

    export = write_export(
        tmp_path / "onnx", pooling="mean", seed=6, prompts={"query": "query: ", "document": ""}
    )
    config = json.loads((export.directory / "config.json").read_text())
    hf_dir = tmp_path / "hf"
    bert = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            max_position_embeddings=config["max_position_embeddings"],
            layer_norm_eps=1e-12,
            hidden_act="gelu",
        )
    )
    state = {k: torch.from_numpy(v) for k, v in export.weights.items()}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    bert.save_pretrained(hf_dir)
    transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(export.directory / "tokenizer.json"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=48)
    model = SentenceTransformer(
        modules=[transformer, models.Pooling(32, "mean"), models.Normalize()],
        prompts={"query": "query: ", "document": ""},
        device="cpu",
    )
    encoder = Encoder.from_sentence_transformers(model)
    assert encoder.dim == 32 and encoder.normalize and encoder.pooling == "mean"
    assert encoder.max_length == 48 and encoder.query_prefix == "query: "
    assert encoder.model_path is None
    onnx_encoder = Encoder.from_dir(export.directory)
    for input_type in ("document", "query"):
        ours = encoder.encode(TEXTS, input_type=input_type)
        found = cosines(ours, onnx_encoder.encode(TEXTS, input_type=input_type)).min()
        _report(f"SentenceTransformer vs ONNX export ({input_type})", found)
        assert found >= MIN_COSINE
    assert encoder.encode(TEXTS, dims=8).shape == (len(TEXTS), 8)
    # no hub revision for a local model: the fingerprint covers the weights
    fingerprint = encoder.fingerprint
    assert fingerprint.startswith("hf:32d:")
    assert Encoder.from_sentence_transformers(model).fingerprint == fingerprint
    assert not fingerprints_match(encoder.fingerprint_for(8), fingerprint)
    with torch.no_grad():
        transformer.auto_model.embeddings.word_embeddings.weight[5, 0] += 1.0
    assert not fingerprints_match(
        Encoder.from_sentence_transformers(model).fingerprint, fingerprint
    )
