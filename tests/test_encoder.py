"""matry.Encoder: the bundled all-MiniLM-L6-v2 int8 ONNX model, from_dir configs, fingerprints."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matry.encoder import BUNDLED_MODEL, Encoder, fingerprint_digest, fingerprints_match

REFERENCE = Path(__file__).parent / "data" / "encoder_reference.npz"


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.default()


@pytest.fixture(scope="module")
def bundled_dir(encoder: Encoder) -> Path:
    return encoder.model_path.parent


def _st_export(
    directory: Path,
    source: Path,
    *,
    pooling: str = "mean",
    prompts: dict[str, str] | None = None,
    normalize: bool = True,
) -> Path:
    """A sentence-transformers style export reusing the bundled ONNX model."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "onnx").mkdir(exist_ok=True)
    shutil.copyfile(source / "model.onnx", directory / "onnx" / "model.onnx")
    shutil.copyfile(source / "tokenizer.json", directory / "tokenizer.json")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 384,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
            }
        )
    )
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    if prompts is not None:
        (directory / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": prompts})
        )
    return directory


# ------------------------------------------------------------------ the bundled model


def test_bundled_model_files_match_the_recorded_reference(bundled_dir: Path) -> None:
    reference = np.load(REFERENCE)
    model_sha = hashlib.sha256((bundled_dir / "model.onnx").read_bytes()).hexdigest()
    assert model_sha == str(reference["model_sha256"])
    card = (bundled_dir / "MODEL_CARD.md").read_text()
    assert model_sha in card
    assert "Apache-2.0" in card


def test_fixed_sentences_reproduce_recorded_vectors(encoder: Encoder) -> None:
    reference = np.load(REFERENCE)
    sentences = [str(s) for s in reference["sentences"]]
    assert len(sentences) >= 40
    vectors = encoder.encode(sentences, batch_size=16)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(sentences), 384)
    np.testing.assert_allclose(vectors, reference["int8_vectors"], atol=2e-4)
    # the model card's claim: cosine >= 0.99 to the float64 reference of the fp32 weights
    cosines = (vectors.astype(np.float64) * reference["fp32_reference"]).sum(axis=1)
    assert cosines.min() >= 0.99, cosines.min()


def test_properties(encoder: Encoder) -> None:
    assert encoder.name == BUNDLED_MODEL
    assert encoder.dim == 384
    assert encoder.max_length == 256
    assert encoder.pooling == "mean"
    assert encoder.normalize is True
    assert not encoder.distinguishes_input_types
    assert "all-MiniLM-L6-v2" in repr(encoder)


def test_paraphrases_score_higher_than_unrelated_sentences(encoder: Encoder) -> None:
    triples = [
        ("A man is playing a guitar.", "Someone strums a guitar.", "The stock market fell today."),
        (
            "How do I bake bread at home?",
            "What is a simple recipe for homemade bread?",
            "The train leaves from platform four.",
        ),
        (
            "The weather will be sunny tomorrow.",
            "Tomorrow's forecast is clear skies.",
            "He fixed the bug in the parser.",
        ),
        (
            "Cats are popular pets.",
            "Many people keep cats at home.",
            "Interest rates rose by half a point.",
        ),
    ]
    for anchor, paraphrase, unrelated in triples:
        a, p, u = encoder.encode([anchor, paraphrase, unrelated])
        assert float(a @ p) > float(a @ u) + 0.2, (anchor, float(a @ p), float(a @ u))


def test_vectors_are_unit_length(encoder: Encoder) -> None:
    vectors = encoder.encode(["one", "two words", "a somewhat longer sentence here"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_dims_truncates_and_renormalizes(encoder: Encoder) -> None:
    texts = ["Matryoshka embeddings nest", "short", "another text about dolls"]
    full = encoder.encode(texts)
    short = encoder.encode(texts, dims=128)
    assert short.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    expected = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-5)
    assert not np.allclose(np.linalg.norm(full[:, :128], axis=1), 1.0, atol=1e-3)
    assert encoder.encode(texts, dims=384).shape == (3, 384)


@pytest.mark.parametrize("dims", [0, 385, -1])
def test_dims_out_of_range_raises(encoder: Encoder, dims: int) -> None:
    with pytest.raises(ValueError, match="dims"):
        encoder.encode("x", dims=dims)


def test_vector_is_the_same_alone_and_inside_a_batch(encoder: Encoder) -> None:
    texts = [
        "short",
        "a medium length sentence about nothing in particular",
        "word " * 120,
        "",
        "Zürich is in Switzerland.",
    ]
    batched = encoder.encode(texts, batch_size=64)
    for position, text in enumerate(texts):
        alone = encoder.encode(text)
        np.testing.assert_allclose(alone[0], batched[position], atol=1e-5)


def test_results_come_back_in_input_order_for_any_batch_size(encoder: Encoder) -> None:
    texts = [("word " * (n % 17)) + f"item {n}" for n in range(37)]
    reference = encoder.encode(texts, batch_size=64)
    for batch_size in (1, 5, 16):
        np.testing.assert_allclose(
            encoder.encode(texts, batch_size=batch_size), reference, atol=1e-5
        )
    reversed_vectors = encoder.encode(texts[::-1], batch_size=7)
    np.testing.assert_allclose(reversed_vectors[::-1], reference, atol=1e-5)


def test_empty_strings_and_texts_beyond_the_token_limit(encoder: Encoder) -> None:
    long_a = "history of the roman empire " * 200  # ~1000 tokens, limit is 256
    long_b = "history of the roman empire " * 400
    vectors = encoder.encode(["", long_a, long_b, "   "])
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # both long texts are cut at the same 256 tokens, so they give the same vector
    np.testing.assert_allclose(vectors[1], vectors[2], atol=1e-6)


def test_empty_list_gives_an_empty_array(encoder: Encoder) -> None:
    empty = encoder.encode([])
    assert empty.shape == (0, 384)
    assert empty.dtype == np.float32
    assert encoder.encode([], dims=64).shape == (0, 64)


def test_a_single_string_is_one_row(encoder: Encoder) -> None:
    one = encoder.encode("hello")
    assert one.shape == (1, 384)
    np.testing.assert_allclose(one, encoder.encode(["hello"]), atol=1e-6)


def test_bad_arguments_raise(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="input_type"):
        encoder.encode("x", input_type="passage")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encoder.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="bytes"):
        encoder.encode(b"raw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode("x", batch_size=0)


def test_progress_bar_is_shown_on_request(
    encoder: Encoder, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder.encode(["a", "b", "c"], progress=True)
    assert "3/3" in capsys.readouterr().err
    encoder.encode(["a", "b"])
    assert capsys.readouterr().err == ""


def test_thread_count_is_configurable_and_does_not_change_vectors(encoder: Encoder) -> None:
    single_thread = Encoder(num_threads=1)
    assert single_thread.num_threads == 1
    texts = ["threads do not change results", "second text"]
    np.testing.assert_allclose(single_thread.encode(texts), encoder.encode(texts), atol=1e-5)
    with pytest.raises(ValueError, match="num_threads"):
        Encoder(num_threads=-1)


def test_unknown_model_name_raises() -> None:
    with pytest.raises(ValueError, match="bundled model"):
        Encoder("no-such-model")


# ------------------------------------------------------------------ fingerprints


def test_fingerprint_is_stable_and_readable(encoder: Encoder) -> None:
    fingerprint = encoder.fingerprint
    assert fingerprint.startswith("all-MiniLM-L6-v2:384d:")
    assert len(fingerprint_digest(fingerprint)) == 24
    assert Encoder().fingerprint == fingerprint
    assert encoder.fingerprint_for(None) == fingerprint
    assert encoder.fingerprint_for(384) == fingerprint


def test_truncated_vectors_have_another_fingerprint(encoder: Encoder) -> None:
    short = encoder.fingerprint_for(128)
    assert short.startswith("all-MiniLM-L6-v2:128d:")
    assert not fingerprints_match(short, encoder.fingerprint)
    assert encoder.fingerprint_for(128) == short
    with pytest.raises(ValueError, match="dims"):
        encoder.fingerprint_for(1000)


def test_copied_model_directory_has_the_same_fingerprint(bundled_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "renamed-copy"
    shutil.copytree(bundled_dir, copy)
    copied = Encoder.from_dir(copy)
    assert fingerprints_match(copied.fingerprint, Encoder.default().fingerprint)


def test_fingerprint_changes_with_pooling_and_prefixes(
    bundled_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    cls_encoder = Encoder.from_dir(bundled_dir, pooling="cls")
    prefixed = Encoder.from_dir(bundled_dir, query_prefix="query: ")
    unnormalized = Encoder.from_dir(bundled_dir, normalize=False)
    digests = {
        fingerprint_digest(e.fingerprint) for e in (encoder, cls_encoder, prefixed, unnormalized)
    }
    assert len(digests) == 4


# ------------------------------------------------------------------ from_dir


def test_from_dir_reads_sentence_transformers_configs(
    bundled_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    export = _st_export(
        tmp_path / "e5-like", bundled_dir, prompts={"query": "query: ", "passage": "passage: "}
    )
    e5 = Encoder.from_dir(export)
    assert e5.name == "e5-like"
    assert e5.max_length == 128
    assert e5.query_prefix == "query: "
    assert e5.document_prefix == "passage: "
    assert e5.distinguishes_input_types
    as_query = e5.encode("what is the capital of France", input_type="query")
    as_document = e5.encode("what is the capital of France", input_type="document")
    assert not np.allclose(as_query, as_document, atol=1e-3)
    # the prefix is simply prepended to the text before tokenization
    np.testing.assert_allclose(
        as_query, encoder.encode("query: what is the capital of France"), atol=1e-5
    )
    np.testing.assert_allclose(
        as_document, encoder.encode("passage: what is the capital of France"), atol=1e-5
    )


def test_from_dir_cls_pooling_and_no_normalization(
    bundled_dir: Path, tmp_path: Path, encoder: Encoder
) -> None:
    export = _st_export(tmp_path / "cls", bundled_dir, pooling="cls", normalize=False)
    cls_encoder = Encoder.from_dir(export)
    assert cls_encoder.pooling == "cls"
    assert not cls_encoder.normalize
    vectors = cls_encoder.encode(["first text", "second, longer text here"])
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert not np.allclose(
        vectors[0] / np.linalg.norm(vectors[0]), encoder.encode("first text")[0], atol=1e-2
    )
    # dims without normalization: a plain prefix of the full vector
    np.testing.assert_allclose(
        cls_encoder.encode(["first text"], dims=32), vectors[:1, :32], atol=1e-5
    )


def test_from_dir_without_settings_names_what_to_pass(bundled_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(bundled_dir / "model.onnx", bare / "model.onnx")
    shutil.copyfile(bundled_dir / "tokenizer.json", bare / "tokenizer.json")
    with pytest.raises(ValueError, match="pooling='mean' or 'cls'"):
        Encoder.from_dir(bare)
    explicit = Encoder.from_dir(bare, pooling="mean", normalize=True, max_length=256)
    assert explicit.dim == 384  # read from the model's output shape
    with pytest.raises(FileNotFoundError):
        Encoder.from_dir(tmp_path / "missing")


def test_from_dir_rejects_unsupported_pooling(bundled_dir: Path, tmp_path: Path) -> None:
    export = _st_export(tmp_path / "newpool", bundled_dir)
    # max pooling is supported (tests/test_encoder_byo.py); a mode matry does not know is not
    (export / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_attention": True}))
    with pytest.raises(ValueError, match="not supported"):
        Encoder.from_dir(export)
    (export / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": 0}))
    with pytest.raises(ValueError, match="no pooling_mode"):
        Encoder.from_dir(export)


# ------------------------------------------------------------------ optional dependencies


def test_import_matry_works_without_onnxruntime_and_tokenizers() -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["onnxruntime"] = None  # makes "import onnxruntime" raise ImportError
        sys.modules["tokenizers"] = None
        import matry
        assert "onnxruntime" not in [m for m, v in sys.modules.items() if v is not None]
        try:
            matry.Encoder()
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("no ImportError")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "matry[encoder]" in result.stdout
