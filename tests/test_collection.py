"""matry.Collection: the embedding contract, persistence, re-embedding, and `matry demo`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matry
import numpy as np
import pytest
from matry import cli
from matry.collection import Collection, Hit
from matry.encoder import Encoder, fingerprints_match
from matry.errors import ContractError

DOCUMENTS = [
    "The cat sat on the warm windowsill all afternoon.",
    "Central banks raised interest rates to fight inflation.",
    "Knead the dough for ten minutes, then let it rise for an hour.",
    "The football match ended in a draw after extra time.",
    "Use a virtual environment to isolate a project's Python packages.",
    "Glaciers are retreating as average temperatures climb.",
]
DOCUMENT_METADATA = [
    {"topic": t} for t in ("pets", "finance", "baking", "sport", "python", "climate")
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.default()


@pytest.fixture(scope="module")
def e5_encoder(encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    """An encoder whose config declares e5-style prefixes (the bundled ONNX model reused)."""
    directory = tmp_path_factory.mktemp("e5-style")
    source = encoder.model_path.parent
    shutil.copyfile(source / "model.onnx", directory / "model.onnx")
    shutil.copyfile(source / "tokenizer.json", directory / "tokenizer.json")
    config = {
        "name": "e5-style",
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 256,
        "query_prefix": "query: ",
        "document_prefix": "passage: ",
    }
    (directory / "encoder_config.json").write_text(json.dumps(config))
    return Encoder.from_dir(directory)


@pytest.fixture(scope="module")
def cls_encoder(encoder: Encoder) -> Encoder:
    return Encoder.from_dir(encoder.model_path.parent, pooling="cls", name="minilm-cls")


@pytest.fixture()
def collection(encoder: Encoder) -> Collection:
    docs = Collection(encoder, M=8, ef_construction=64)
    docs.add(DOCUMENTS, metadata=DOCUMENT_METADATA)
    return docs


# ------------------------------------------------------------------ adding and searching


def test_public_names() -> None:
    assert matry.Collection is Collection
    assert matry.Hit is Hit
    assert matry.Encoder is Encoder
    assert issubclass(matry.ContractError, ValueError)


def test_search_returns_hits_with_text_and_metadata(collection: Collection) -> None:
    hits = collection.search("How do I make bread?", k=3)
    assert isinstance(hits, list) and len(hits) == 3
    assert all(isinstance(hit, Hit) for hit in hits)
    best = hits[0]
    assert best.text == DOCUMENTS[2]
    assert best.metadata == {"topic": "baking"}
    assert best.id == 2
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert -1.0 <= scores[-1] <= scores[0] <= 1.0


def test_search_many_queries_gives_one_list_per_query(collection: Collection) -> None:
    results = collection.search(["my kitten sleeps", "bond yields and monetary policy"], k=2)
    assert len(results) == 2
    assert all(len(hits) == 2 for hits in results)
    assert results[0][0].metadata == {"topic": "pets"}
    assert results[1][0].metadata == {"topic": "finance"}
    assert collection.search([], k=2) == []


def test_search_score_is_the_cosine_of_the_vectors(
    collection: Collection, encoder: Encoder
) -> None:
    query = "melting ice sheets"
    (hit,) = collection.search(query, k=1)
    expected = float(
        encoder.encode(query, input_type="query")[0] @ encoder.encode(hit.text or "")[0]
    )
    assert hit.score == pytest.approx(expected, abs=1e-4)


def test_k_larger_than_the_collection_returns_what_exists(collection: Collection) -> None:
    assert len(collection.search("anything", k=50)) == len(DOCUMENTS)


def test_add_assigns_ids_and_accepts_explicit_ones(encoder: Encoder) -> None:
    docs = Collection(encoder)
    first = docs.add(["alpha", "beta"])
    assert first.tolist() == [0, 1]
    assert docs.add("gamma", ids=[10], metadata={"k": 1}).tolist() == [10]
    assert len(docs) == 3 and 10 in docs
    assert docs.get_text(10) == "gamma" and docs.get_metadata(10) == {"k": 1}
    with pytest.raises(KeyError, match="already"):
        docs.add(["again"], ids=[10])
    with pytest.raises(ValueError, match="metadata"):
        docs.add(["x"], metadata=[{"bad": object()}])
    with pytest.raises(ValueError, match="metadata"):
        docs.add(["x", "y"], metadata=[{}])
    assert len(docs) == 3  # failed calls change nothing
    assert docs.add([]).shape == (0,)
    docs.remove([0])
    assert 0 not in docs and len(docs) == 2
    assert all(hit.id != 0 for hit in docs.search("alpha", k=5))


NON_INTEGRAL_IDS = [
    [1.7],
    [3.0],  # float dtypes are refused outright, integral or not (as matry.Index does)
    np.array([2.0, 4.0]),
    [True],
    True,
    ["1"],
    "1",
    [1, 2.5],
    1.7,
]


@pytest.mark.parametrize("bad", NON_INTEGRAL_IDS, ids=repr)
def test_remove_refuses_non_integer_ids_and_changes_nothing(
    collection: Collection, bad: object
) -> None:
    before = collection.ids().tolist()
    with pytest.raises(ValueError, match="ids"):
        collection.remove(bad)  # type: ignore[arg-type]
    assert collection.ids().tolist() == before
    assert [collection.get_text(i) for i in before] == DOCUMENTS


@pytest.mark.parametrize("bad", NON_INTEGRAL_IDS, ids=repr)
def test_add_refuses_non_integer_ids_and_changes_nothing(encoder: Encoder, bad: object) -> None:
    docs = Collection(encoder)
    count = np.asarray(bad).size
    with pytest.raises(ValueError, match="ids"):
        docs.add(["some text"] * count, ids=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ids"):
        docs.add_vectors(
            encoder.encode(["some text"] * count),
            encoder.fingerprint,
            ids=bad,  # type: ignore[arg-type]
        )
    assert len(docs) == 0


def test_integer_ids_of_any_integer_type_are_accepted(collection: Collection) -> None:
    collection.remove(np.array([1], dtype=np.uint8))
    collection.remove(np.int64(2))
    collection.remove(np.array([[3]], dtype=np.int32))
    assert collection.ids().tolist() == [0, 4, 5]
    collection.remove([])
    assert len(collection) == 3
    with pytest.raises(ValueError, match="ids"):
        collection.remove([-1])
    with pytest.raises(ValueError, match="duplicate"):
        collection.remove([0, 0])
    with pytest.raises(KeyError):
        collection.remove([4, 99])  # one unknown id: nothing is removed
    assert collection.ids().tolist() == [0, 4, 5]


@pytest.mark.parametrize("bad", [1.7, 1.0, True, "1", None])
def test_single_id_lookups_refuse_non_integers(collection: Collection, bad: object) -> None:
    for lookup in (collection.get_text, collection.get_metadata):
        with pytest.raises(ValueError, match="id: expected an integer"):
            lookup(bad)  # type: ignore[arg-type]
    assert collection.get_text(np.int64(1)) == DOCUMENTS[1]
    assert collection.get_metadata(np.uint32(1)) == DOCUMENT_METADATA[1]
    with pytest.raises(KeyError):
        collection.get_text(99)


def test_vectors_added_with_the_right_fingerprint_are_accepted(encoder: Encoder) -> None:
    docs = Collection(encoder)
    vectors = encoder.encode(DOCUMENTS[:3])
    ids = docs.add_vectors(
        vectors, encoder.fingerprint, texts=DOCUMENTS[:3], metadata=DOCUMENT_METADATA[:3]
    )
    assert ids.tolist() == [0, 1, 2]
    query = encoder.encode("bread dough", input_type="query")
    hits = docs.search_vectors(query[0], encoder.fingerprint, k=1)
    assert hits[0].text == DOCUMENTS[2]
    assert len(docs.search_vectors(query, encoder.fingerprint, k=1)) == 1  # 2-D: list per row


def test_truncated_collection_uses_the_truncated_fingerprint(encoder: Encoder) -> None:
    docs = Collection(encoder, dims=128)
    assert docs.dims == 128
    assert docs.fingerprint == encoder.fingerprint_for(128)
    docs.add(DOCUMENTS)
    assert docs.search("rising temperatures", k=1)[0].metadata is None
    assert docs.search("rising temperatures", k=1)[0].text == DOCUMENTS[5]
    docs.add_vectors(encoder.encode(["extra"], dims=128), encoder.fingerprint_for(128))


# ------------------------------------------------------------------ one test per violation


def test_dimension_mismatch_raises_contract_error(collection: Collection, encoder: Encoder) -> None:
    short = encoder.encode(["a cat"], dims=128)
    with pytest.raises(ContractError, match="128 dims.*384-d"):
        collection.add_vectors(short, encoder.fingerprint)
    with pytest.raises(ContractError, match="128 dims"):
        collection.search_vectors(short, encoder.fingerprint)
    assert len(collection) == len(DOCUMENTS)


def test_non_unit_vectors_under_ip_raise_contract_error(encoder: Encoder) -> None:
    docs = Collection(encoder, metric="ip")
    vectors = encoder.encode(["a cat", "a dog"])
    docs.add_vectors(vectors, encoder.fingerprint)
    with pytest.raises(ContractError, match="'ip' needs unit-length vectors"):
        docs.add_vectors(vectors * 2.0, encoder.fingerprint)
    with pytest.raises(ContractError, match="row 0 has norm 0.5"):
        docs.search_vectors(vectors * 0.5, encoder.fingerprint)
    assert len(docs) == 2


def test_ip_with_an_encoder_that_does_not_normalize_raises(encoder: Encoder) -> None:
    unnormalized = Encoder.from_dir(encoder.model_path.parent, normalize=False)
    with pytest.raises(ContractError, match="does not normalize"):
        Collection(unnormalized, metric="ip")
    Collection(unnormalized, metric="cosine")  # cosine normalizes inside the index


def test_vectors_of_another_fingerprint_raise_contract_error(
    collection: Collection, encoder: Encoder, cls_encoder: Encoder
) -> None:
    other = cls_encoder.encode(["a cat"])
    with pytest.raises(ContractError) as raised:
        collection.add_vectors(other, cls_encoder.fingerprint)
    assert cls_encoder.fingerprint in str(raised.value)
    assert collection.fingerprint in str(raised.value)
    with pytest.raises(ContractError, match="reembed"):
        collection.search_vectors(other, cls_encoder.fingerprint)
    # same model, truncated: another fingerprint as well
    with pytest.raises(ContractError):
        collection.add_vectors(encoder.encode("x", dims=128), encoder.fingerprint_for(128))
    assert len(collection) == len(DOCUMENTS)


def test_document_vectors_used_as_queries_raise_where_the_model_distinguishes(
    e5_encoder: Encoder,
) -> None:
    docs = Collection(e5_encoder)
    docs.add(DOCUMENTS)
    as_document = e5_encoder.encode("bread", input_type="document")
    with pytest.raises(ContractError, match="document-type vectors used as queries"):
        docs.search_vectors(as_document, e5_encoder.fingerprint, input_type="document")
    as_query = e5_encoder.encode("bread", input_type="query")
    assert docs.search_vectors(as_query[0], e5_encoder.fingerprint, k=1)[0].text == DOCUMENTS[2]
    with pytest.raises(ContractError, match="query-type vectors used as documents"):
        docs.add_vectors(as_query, e5_encoder.fingerprint, input_type="query")


def test_input_type_is_not_a_violation_where_the_model_does_not_distinguish(
    collection: Collection, encoder: Encoder
) -> None:
    as_document = encoder.encode("bread", input_type="document")
    hits = collection.search_vectors(as_document, encoder.fingerprint, k=1, input_type="document")
    assert hits[0][0].text == DOCUMENTS[2]


def test_load_with_another_encoder_names_both_fingerprints(
    collection: Collection, cls_encoder: Encoder, tmp_path: Path
) -> None:
    path = tmp_path / "docs.matry"
    collection.save(path)
    with pytest.raises(ContractError) as raised:
        Collection.load(path, encoder=cls_encoder)
    message = str(raised.value)
    assert collection.fingerprint in message
    assert cls_encoder.fingerprint in message


def test_load_of_a_plain_index_raises_contract_error(tmp_path: Path) -> None:
    index = matry.Index(dim=4)
    index.add(np.eye(4, dtype=np.float32))
    path = tmp_path / "plain.matry"
    index.save(path)
    with pytest.raises(ContractError, match="no encoder"):
        Collection.load(path)


# ------------------------------------------------------------------ persistence and migration


def test_save_and_load_keep_texts_metadata_and_results(
    collection: Collection, tmp_path: Path
) -> None:
    collection.add_vectors(collection.encoder.encode(["vector only"]), collection.fingerprint)
    path = tmp_path / "docs.matry"
    collection.save(path)
    before = collection.search(["a sleepy cat", "football"], k=3)

    loaded = Collection.load(path)
    assert len(loaded) == len(collection)
    assert loaded.fingerprint == collection.fingerprint
    assert loaded.metric == "cosine" and loaded.dims == 384
    for item_id in collection.ids().tolist():
        assert loaded.get_text(item_id) == collection.get_text(item_id)
        assert loaded.get_metadata(item_id) == collection.get_metadata(item_id)
    assert loaded.search(["a sleepy cat", "football"], k=3) == before


def test_saved_file_metadata_is_readable_without_the_payload(
    collection: Collection, tmp_path: Path
) -> None:
    path = tmp_path / "docs.matry"
    collection.save(path)
    header = matry.read_metadata(path)
    record = header["metadata"]["matry_collection"]
    assert record["fingerprint"] == collection.fingerprint
    assert record["encoder"]["name"] == "all-MiniLM-L6-v2"
    assert record["dims"] == 384 and record["metric"] == "cosine"
    assert record["normalized"] is True
    assert record["input_types"]["stored"] == "document"
    assert record["texts"] == DOCUMENTS
    assert record["metadata"] == DOCUMENT_METADATA
    assert Collection.read_record(path) == record


def test_reembed_gives_the_new_fingerprint_and_the_same_texts(
    collection: Collection, cls_encoder: Encoder, tmp_path: Path
) -> None:
    old_fingerprint = collection.fingerprint
    moved = collection.reembed(cls_encoder, progress=False)
    assert moved.fingerprint == cls_encoder.fingerprint
    assert not fingerprints_match(moved.fingerprint, old_fingerprint)
    assert moved.ids().tolist() == collection.ids().tolist()
    for item_id in collection.ids().tolist():
        assert moved.get_text(item_id) == collection.get_text(item_id)
        assert moved.get_metadata(item_id) == collection.get_metadata(item_id)
    np.testing.assert_allclose(moved.index.get([2]), cls_encoder.encode(DOCUMENTS[2]), atol=1e-5)
    # the old collection is untouched and still usable
    assert collection.fingerprint == old_fingerprint
    assert collection.search("bread", k=1)[0].id == 2
    path = tmp_path / "moved.matry"
    moved.save(path)
    assert Collection.load(path, encoder=cls_encoder).get_text(2) == DOCUMENTS[2]
    with pytest.raises(ContractError):
        Collection.load(path)  # the bundled (mean-pooling) encoder no longer fits


def test_reembed_refuses_items_without_text(
    collection: Collection, encoder: Encoder, cls_encoder: Encoder
) -> None:
    collection.add_vectors(encoder.encode(["no text kept"]), encoder.fingerprint, ids=[99])
    with pytest.raises(ContractError, match=r"without text \(ids \[99\]\)"):
        collection.reembed(cls_encoder, progress=False)


def test_reembed_to_truncated_dims(collection: Collection, encoder: Encoder) -> None:
    small = collection.reembed(encoder, progress=False, dims=64)
    assert small.dims == 64
    assert small.fingerprint == encoder.fingerprint_for(64)
    assert small.search("bread", k=1)[0].id == 2


# ------------------------------------------------------------------ the command line


def test_matry_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["demo", "--count", "40", "-k", "2", "--query", "parse JSON text"])
    output = capsys.readouterr().out
    assert status == 0
    assert "40 docstrings" in output
    assert "query: 'parse JSON text'" in output
    assert "encode:" in output and "index build:" in output
    hit_lines = [
        line
        for line in output.splitlines()
        if line.startswith("  0.") or line.startswith("  -0.") or line.startswith("  1.")
    ]
    assert len(hit_lines) == 2


def test_stdlib_docstrings_are_unique_and_spread() -> None:
    pairs = cli.stdlib_docstrings(200)
    assert len(pairs) == 200
    assert len({text for _, text in pairs}) == 200
    assert len({name.split(".")[0] for name, _ in pairs}) >= 20


def test_tune_is_dispatched(monkeypatch: pytest.MonkeyPatch) -> None:
    received: dict[str, list[str]] = {}

    def fake_tune(argv: list[str]) -> int:
        received["tune"] = argv
        return 3

    import matry.tune

    monkeypatch.setattr(matry.tune, "cli_main", fake_tune)
    assert cli.main(["tune", "--recall", "0.95", "data.npy"]) == 3
    assert received["tune"] == ["--recall", "0.95", "data.npy"]


def test_cli_without_a_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    assert "demo" in capsys.readouterr().out
