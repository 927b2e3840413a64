"""Save / load / pickle round trips, corrupted and foreign files, the golden file."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import matry
import numpy as np
import pytest
from conftest import METRICS, exact_top_k, prepare_for_metric

DATA_DIR = Path(__file__).resolve().parent / "data"
GOLDEN_INDEX = DATA_DIR / "golden_v1.matry"
GOLDEN_EXPECTED = DATA_DIR / "golden_v1_expected.npz"


def build_index(metric: str, n: int = 400, dim: int = 16, seed: int = 0) -> matry.Index:
    rng = np.random.default_rng(seed)
    vectors = prepare_for_metric(metric, rng.standard_normal((n, dim)))
    ix = matry.Index(dim=dim, metric=metric, M=12, ef_construction=100, seed=7)
    ix.add(vectors, ids=np.arange(n) * 2 + 5, num_threads=1)
    ix.remove(np.arange(0, n, 10) * 2 + 5)
    ix.ef = 90
    ix.metadata = {"model": "unit-test", "version": [1, 2], "unicode": "héllo"}
    return ix


def query_set(metric: str, dim: int = 16, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(99)
    return prepare_for_metric(metric, rng.standard_normal((n, dim)))


def assert_same_index(original: matry.Index, restored: matry.Index, queries: np.ndarray) -> None:
    assert len(restored) == len(original)
    np.testing.assert_array_equal(restored.ids(), original.ids())
    np.testing.assert_array_equal(restored.get(original.ids()), original.get(original.ids()))
    assert restored.metadata == original.metadata
    assert restored.ef == original.ef
    assert restored.dim == original.dim
    assert restored.metric == original.metric
    assert restored.M == original.M
    assert restored.ef_construction == original.ef_construction
    assert restored.seed == original.seed
    assert restored.prefix_dim == original.prefix_dim
    for k in (1, 10):
        expected_ids, expected_distances = original.search(queries, k=k, num_threads=1)
        got_ids, got_distances = restored.search(queries, k=k, num_threads=1)
        np.testing.assert_array_equal(got_ids, expected_ids)
        np.testing.assert_array_equal(got_distances, expected_distances)


@pytest.mark.parametrize("metric", METRICS)
def test_save_load_round_trip(metric: str, tmp_path: Path) -> None:
    ix = build_index(metric)
    path = tmp_path / "index.matry"
    ix.save(str(path))
    restored = matry.Index.load(str(path))
    assert_same_index(ix, restored, query_set(metric))


def test_loaded_index_keeps_working(tmp_path: Path) -> None:
    ix = build_index("l2")
    path = tmp_path / "index.matry"
    ix.save(str(path))
    restored = matry.Index.load(str(path))
    rng = np.random.default_rng(3)
    extra = rng.standard_normal((50, 16)).astype(np.float32)
    new_ids = restored.add(extra, num_threads=1)
    assert new_ids[0] > ix.ids().max()
    restored.remove(restored.ids()[:10])
    found, distances = restored.search(extra, k=1, ef=200)
    np.testing.assert_array_equal(found[:, 0], new_ids)
    np.testing.assert_allclose(distances[:, 0], 0.0, atol=1e-5)
    assert len(ix) == 360  # the original is untouched


def test_default_ids_continue_after_load_even_if_the_largest_was_removed(tmp_path: Path) -> None:
    ix = matry.Index(dim=4, metric="l2")
    ix.add(np.eye(4, dtype=np.float32), ids=[1, 2, 3, 40])
    ix.remove([40])
    path = tmp_path / "index.matry"
    ix.save(str(path))
    restored = matry.Index.load(str(path))
    expected_next = ix.add(np.ones(4, dtype=np.float32))
    np.testing.assert_array_equal(restored.add(np.ones(4, dtype=np.float32)), expected_next)
    np.testing.assert_array_equal(expected_next, [41])


@pytest.mark.parametrize("metric", METRICS)
def test_empty_index_round_trip(metric: str, tmp_path: Path) -> None:
    ix = matry.Index(dim=5, metric=metric)
    path = tmp_path / "empty.matry"
    ix.save(str(path))
    restored = matry.Index.load(str(path))
    assert len(restored) == 0
    assert restored.metric == metric and restored.dim == 5
    found, distances = restored.search(prepare_for_metric(metric, np.ones((2, 5))), k=3)
    np.testing.assert_array_equal(found, -np.ones((2, 3), dtype=np.int64))
    assert np.all(np.isposinf(distances))
    restored.add(prepare_for_metric(metric, np.ones((1, 5))))
    assert len(restored) == 1


@pytest.mark.parametrize("metric", METRICS)
def test_pickle_round_trip(metric: str) -> None:
    ix = build_index(metric)
    restored = pickle.loads(pickle.dumps(ix))
    assert isinstance(restored, matry.Index)
    assert_same_index(ix, restored, query_set(metric))


def test_deepcopy_is_independent() -> None:
    ix = build_index("cosine")
    clone = copy.deepcopy(ix)
    assert_same_index(ix, clone, query_set("cosine"))
    clone.remove(clone.ids()[:5])
    clone.add(np.ones((3, 16), dtype=np.float32))
    clone.metadata = {"changed": True}
    assert len(ix) == 360
    assert ix.metadata["model"] == "unit-test"


def test_read_metadata_reports_the_header(tmp_path: Path) -> None:
    ix = build_index("ip")
    path = tmp_path / "index.matry"
    ix.save(str(path))
    header = matry.read_metadata(str(path))
    assert isinstance(header["format_version"], int) and header["format_version"] >= 1
    assert header["metric"] == "ip"
    assert header["dim"] == 16
    assert header["count"] == 360
    assert header["M"] == 12
    assert header["ef_construction"] == 100
    assert header["ef"] == 90
    assert header["prefix_dim"] is None
    assert header["metadata"] == ix.metadata


def test_save_is_atomic_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "index.matry"
    first = build_index("l2", n=50)
    first.save(str(path))
    second = build_index("l2", n=80, seed=1)
    second.save(str(path))
    assert os.listdir(tmp_path) == ["index.matry"]  # no temporary file left behind
    restored = matry.Index.load(str(path))
    assert len(restored) == len(second) == 72
    assert_same_index(second, restored, query_set("l2"))


def test_save_and_load_accept_pathlike(tmp_path: Path) -> None:
    ix = build_index("cosine", n=30)
    path = tmp_path / "index.matry"
    ix.save(path)
    assert_same_index(ix, matry.Index.load(path), query_set("cosine"))
    assert matry.read_metadata(path)["count"] == 27


def test_load_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        matry.Index.load(str(tmp_path / "does-not-exist.matry"))


@pytest.fixture()
def small_index_bytes(tmp_path: Path) -> bytes:
    rng = np.random.default_rng(0)
    ix = matry.Index(dim=8, metric="cosine", seed=0)
    ix.add(rng.standard_normal((30, 8)).astype(np.float32), num_threads=1)
    ix.remove([4])
    ix.metadata = {"purpose": "corruption test"}
    path = tmp_path / "small.matry"
    ix.save(str(path))
    data = path.read_bytes()
    matry.Index.load(str(path))  # the intact file loads
    return data


def load_outcome(path: Path) -> str | None:
    """None if loading raised CorruptIndexError, else a description of what happened instead."""
    try:
        matry.Index.load(str(path))
    except matry.CorruptIndexError:
        return None
    except Exception as error:  # any other exception type is a failure of the contract
        return f"{type(error).__name__}: {error}"
    return "loaded without error"


def test_every_truncation_raises_corrupt_index_error(
    small_index_bytes: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "truncated.matry"
    failures = []
    for length in range(len(small_index_bytes)):
        path.write_bytes(small_index_bytes[:length])
        outcome = load_outcome(path)
        if outcome is not None:
            failures.append(f"length {length}: {outcome}")
    assert not failures, (
        f"{len(failures)} of {len(small_index_bytes)} truncations not rejected:\n"
        + "\n".join(failures[:20])
    )


def test_random_byte_flips_raise_corrupt_index_error(
    small_index_bytes: bytes, tmp_path: Path
) -> None:
    rng = np.random.default_rng(20240601)
    path = tmp_path / "flipped.matry"
    failures = []
    for _ in range(1000):
        position = int(rng.integers(0, len(small_index_bytes)))
        corrupted = bytearray(small_index_bytes)
        corrupted[position] = (corrupted[position] + int(rng.integers(1, 256))) % 256
        path.write_bytes(bytes(corrupted))
        outcome = load_outcome(path)
        if outcome is not None:
            failures.append(f"byte {position} -> {corrupted[position]}: {outcome}")
    assert not failures, f"{len(failures)} flips not rejected:\n" + "\n".join(failures[:20])


def test_appended_bytes_raise_corrupt_index_error(small_index_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "appended.matry"
    path.write_bytes(small_index_bytes + b"\x00")
    assert load_outcome(path) is None
    path.write_bytes(small_index_bytes + small_index_bytes)
    assert load_outcome(path) is None


FOREIGN_CONTENTS = {
    "empty": b"",
    "one byte": b"\x00",
    "random 16": np.random.default_rng(1).integers(0, 256, 16, dtype=np.uint8).tobytes(),
    "random 5000": np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(200)),
    "text": b"this is not an index file\n" * 20,
    "json": b'{"format_version": 1, "metric": "cosine", "dim": 8}',
    "zeros": bytes(4096),
}


@pytest.mark.parametrize("name", sorted(FOREIGN_CONTENTS))
def test_foreign_file_raises_corrupt_index_error(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name.replace(' ', '_')}.matry"
    path.write_bytes(FOREIGN_CONTENTS[name])
    with pytest.raises(matry.CorruptIndexError):
        matry.Index.load(str(path))
    with pytest.raises(matry.CorruptIndexError):
        matry.read_metadata(str(path))


def test_golden_file_still_loads_with_the_same_results() -> None:
    expected = np.load(GOLDEN_EXPECTED)
    header = matry.read_metadata(str(GOLDEN_INDEX))
    assert header["format_version"] == 1
    assert header["metric"] == "cosine"
    assert header["dim"] == 8
    assert header["count"] == 48
    assert header["ef"] == 80
    assert header["metadata"] == {"golden": 1}
    ix = matry.Index.load(str(GOLDEN_INDEX))
    assert ix.metadata == {"golden": 1}
    assert ix.ef == 80
    assert ix.metric == "cosine"
    np.testing.assert_array_equal(ix.ids(), expected["live_ids"])
    np.testing.assert_allclose(ix.get(expected["live_ids"]), expected["stored_vectors"], atol=1e-7)
    found, distances = ix.search(expected["queries"], k=5)
    np.testing.assert_array_equal(found, expected["found_ids"])
    np.testing.assert_allclose(distances, expected["found_distances"], rtol=1e-5, atol=1e-6)
    # The expected results themselves are the exact neighbours (50 vectors, ef 80).
    live = expected["live_ids"]
    true_ids, _ = exact_top_k("cosine", expected["queries"], expected["vectors"][live], live, 5)
    np.testing.assert_array_equal(expected["found_ids"], true_ids)


# -- ids near 2^63 ----------------------------------------------------------------------------

LARGEST_ID = 2**63 - 1
EDGE_IDS = (0, 2**62, 2**63 - 2, LARGEST_ID)


def edge_id_index() -> matry.Index:
    ix = matry.Index(dim=4, metric="l2", seed=0)
    ix.add(np.eye(4, dtype=np.float32) + 1.0, ids=list(EDGE_IDS), num_threads=1)
    return ix


def round_trips(ix: matry.Index, tmp_path: Path) -> dict[str, matry.Index]:
    path = tmp_path / "edge.matry"
    ix.save(path)
    core, metadata = matry._core.Index.from_bytes(ix._core.to_bytes())
    return {
        "save/load": matry.Index.load(path),
        "pickle": pickle.loads(pickle.dumps(ix)),
        "to_bytes/from_bytes": matry.Index(0, _core_index=core),
    }


def test_every_accepted_id_round_trips(tmp_path: Path) -> None:
    ix = edge_id_index()
    for how, restored in round_trips(ix, tmp_path).items():
        np.testing.assert_array_equal(restored.ids(), np.array(EDGE_IDS, dtype=np.int64), how)
        for id in EDGE_IDS:
            assert id in restored, how
        np.testing.assert_array_equal(restored.get([LARGEST_ID]), ix.get([LARGEST_ID]), how)
        found, _ = restored.search(np.eye(4, dtype=np.float32)[3] + 1.0, k=1)
        assert found[0, 0] == LARGEST_ID, how
        restored.remove([LARGEST_ID, 2**63 - 2])
        np.testing.assert_array_equal(restored.ids(), [0, 2**62], how)
        restored.add(np.ones((1, 4), dtype=np.float32), ids=[LARGEST_ID])
        assert LARGEST_ID in restored, how


def test_default_ids_stop_at_the_largest_id_and_change_nothing(tmp_path: Path) -> None:
    ix = matry.Index(dim=4, metric="l2")
    ix.add(np.ones((1, 4), dtype=np.float32), ids=[2**63 - 2])
    before = ix._core.to_bytes()
    with pytest.raises(ValueError, match=r"^ids: .*2\^63 - 1.*pass explicit ids"):
        ix.add(np.ones((2, 4), dtype=np.float32))  # would be 2^63 - 1 and 2^63
    assert ix._core.to_bytes() == before
    # One more default id still fits: 2^63 - 1 itself.
    np.testing.assert_array_equal(ix.add(np.zeros((1, 4), dtype=np.float32)), [LARGEST_ID])
    after_largest = ix._core.to_bytes()
    with pytest.raises(ValueError, match="pass explicit ids"):
        ix.add(np.zeros((1, 4), dtype=np.float32))
    assert ix._core.to_bytes() == after_largest
    # Removing the largest id does not make its successor available (ids are never reused),
    # and the limit survives a round trip.
    ix.remove([LARGEST_ID])
    for how, restored in round_trips(ix, tmp_path).items():
        with pytest.raises(ValueError, match="pass explicit ids"):
            restored.add(np.zeros((1, 4), dtype=np.float32))
        assert len(restored) == 1, how
        restored.add(np.zeros((1, 4), dtype=np.float32), ids=[5])
        assert 5 in restored, how


def test_default_ids_continue_after_a_large_explicit_id(tmp_path: Path) -> None:
    ix = matry.Index(dim=4, metric="l2")
    ix.add(np.ones((1, 4), dtype=np.float32), ids=[2**62])
    restored = round_trips(ix, tmp_path)["save/load"]
    np.testing.assert_array_equal(
        restored.add(np.ones((3, 4), dtype=np.float32)), 2**62 + np.arange(1, 4)
    )


def test_ef_above_2_to_the_30_round_trips(tmp_path: Path) -> None:
    ix = build_index("l2", n=20)
    ix.ef = 2**31
    for how, restored in round_trips(ix, tmp_path).items():
        assert restored.ef == 2**31, how


@pytest.mark.parametrize("state", [None, {}, {"index": "text"}, {"index": 5}, [b"MATRYIDX"]])
def test_unpickling_a_bad_state_raises_corrupt_index_error(state: object) -> None:
    ix = matry.Index.__new__(matry.Index)
    with pytest.raises(matry.CorruptIndexError, match="pickled state"):
        ix.__setstate__(state)  # type: ignore[arg-type]


def test_a_rotation_just_inside_the_tolerance_loads_back(tmp_path: Path) -> None:
    """Accepted in float64 at construction, stored as float32: the load must accept it too."""
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    # R @ R.T = (1 + 0.99995e-4) I: inside 1e-4 in float64, just outside it once rounded.
    rotation = q * np.sqrt(1 + 0.99995e-4)
    ix = matry.Index(dim=32, metric="l2", rotation=rotation)
    ix.add(rng.standard_normal((10, 32)).astype(np.float32))
    stored = ix.rotation.astype(np.float64)
    assert np.abs(stored @ stored.T - np.eye(32)).max() > 1e-4
    for how, restored in round_trips(ix, tmp_path).items():
        np.testing.assert_array_equal(restored.rotation, ix.rotation, how)
