"""Crafted files: every size and checksum is right, but an invariant the index relies on is not.

Each case patches a valid saved index through tests/data/v1_format.py (which lays the file out
again with the CRCs recomputed), and the load must raise CorruptIndexError naming the problem,
both from a file and from pickled bytes. The untouched files, and patched files that are still
valid, must load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matry
import numpy as np
import pytest
from conftest import normalize_rows
from data.v1_format import V1File

DATA_DIR = Path(__file__).resolve().parent / "data"
GOLDEN_INDEX = DATA_DIR / "golden_v1.matry"


def cosine_index() -> matry.Index:
    """Upper levels, removed ids and an id re-added after removal (an older deleted node with
    the same id as a newer live one, which is valid)."""
    rng = np.random.default_rng(5)
    ix = matry.Index(dim=8, metric="cosine", M=4, ef_construction=40, seed=3)
    ix.add(rng.standard_normal((60, 8)).astype(np.float32), num_threads=1)
    ix.remove([2, 7, 11])
    ix.add(rng.standard_normal((1, 8)).astype(np.float32), ids=[7], num_threads=1)
    ix.metadata = {"purpose": "crafted files"}
    return ix


def rotated_ip_index() -> matry.Index:
    rng = np.random.default_rng(6)
    rotation, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    ix = matry.Index(dim=6, metric="ip", M=4, seed=1, prefix_dim=3, rotation=rotation)
    ix.add(normalize_rows(rng.standard_normal((20, 6))), num_threads=1)
    return ix


def empty_index() -> matry.Index:
    return matry.Index(dim=4, metric="l2")


BASES: dict[str, Callable[[], matry.Index]] = {
    "cosine": cosine_index,
    "ip": rotated_ip_index,
    "empty": empty_index,
}


@pytest.fixture(scope="module")
def base_files() -> dict[str, bytes]:
    """Each base index as saved (the bytes pickle carries, metadata included)."""
    return {name: make().__getstate__()["index"] for name, make in BASES.items()}


# -- edits ------------------------------------------------------------------------------------


def live_node_then_newer_deleted_node(f: V1File) -> None:
    """ids() would list the live node while get/remove/`in` see the newer, deleted one."""
    live = int(np.flatnonzero(f.deleted == 0)[0])
    later_deleted = int(np.flatnonzero((f.deleted == 1) & (np.arange(len(f.deleted)) > live))[0])
    f.labels[later_deleted] = f.labels[live]


def two_live_nodes_share_an_id(f: V1File) -> None:
    f.labels[1] = f.labels[0]


def reactivate_the_older_node_of_a_readded_id(f: V1File) -> None:
    """The id re-added after removal: make its old node live and its new one deleted."""
    labels, counts = np.unique(f.labels, return_counts=True)
    nodes = np.flatnonzero(f.labels == labels[counts > 1][0])
    f.deleted[nodes[0]], f.deleted[nodes[-1]] = 0, 1


def set_header(**fields: int) -> Callable[[V1File], None]:
    def edit(f: V1File) -> None:
        f.header.update(fields)

    return edit


def scale_row(f: V1File) -> None:
    f.vectors[3] *= 1.5


def zero_row(f: V1File) -> None:
    f.vectors[3] = 0.0


def nan_in_row(f: V1File) -> None:
    f.vectors[3, 2] = np.nan


def negative_id(f: V1File) -> None:
    f.labels[4] = -5


def id_at_next_id(f: V1File) -> None:
    f.labels[4] = f.header["next_label"]


def deleted_flag_two(f: V1File) -> None:
    f.deleted[4] = 2


def wrong_live_count(f: V1File) -> None:
    f.header["live_count"] -= 1


def level0_count_over_2m(f: V1File) -> None:
    f.level0[5, 0] = 2 * f.header["M"] + 1


def level0_link_past_the_end(f: V1File) -> None:
    f.level0[5, 0] = max(int(f.level0[5, 0]), 1)
    f.level0[5, 1] = f.header["node_count"]


def upper_node(f: V1File) -> int:
    return int(np.flatnonzero(f.levels >= 1)[0])


def upper_count_over_m(f: V1File) -> None:
    f.upper[upper_node(f)][0, 0] = f.header["M"] + 1


def upper_link_to_a_level0_node(f: V1File) -> None:
    node = upper_node(f)
    f.upper[node][0, 0] = max(int(f.upper[node][0, 0]), 1)
    f.upper[node][0, 1] = int(np.flatnonzero(f.levels == 0)[0])


def entry_point_below_the_top(f: V1File) -> None:
    f.header["entry_point"] = int(np.flatnonzero(f.levels < f.header["max_level"])[0])


def max_level_above_every_node(f: V1File) -> None:
    f.header["max_level"] += 1


def level_64(f: V1File) -> None:
    f.levels[0] = 64


def rotation_not_orthogonal(f: V1File) -> None:
    f.rotation[0] += 0.05


def rotation_scaled(f: V1File) -> None:
    f.rotation *= 1.01


def rotation_nan(f: V1File) -> None:
    f.rotation[3] = np.nan


def rotation_dropped_size_kept(f: V1File) -> None:
    f.header["rotation_floats"] = f.header["dim"] * f.header["dim"] - 1
    f.rotation = f.rotation[:-1]


def set_metadata(text: bytes) -> Callable[[V1File], None]:
    def edit(f: V1File) -> None:
        f.metadata = text

    return edit


DEEP = 100_000
NESTED_METADATA = b'{"user": {"x": ' + b"[" * DEEP + b"]" * DEEP + b"}}"
HUGE_INTEGER_METADATA = b'{"user": {"x": ' + b"7" * 5000 + b"}}"


@dataclass(frozen=True)
class Case:
    base: str
    edit: Callable[[V1File], None]
    message: str  # a regular expression the CorruptIndexError message must match


CASES: dict[str, Case] = {
    # ids and the label -> node map
    "live node followed by a newer deleted node with its id": Case(
        "cosine", live_node_then_newer_deleted_node, "live node followed by a newer node"
    ),
    "two live nodes share an id": Case(
        "cosine", two_live_nodes_share_an_id, "live node followed by a newer node"
    ),
    "older node of a re-added id live, newer deleted": Case(
        "cosine", reactivate_the_older_node_of_a_readded_id, "live node followed by a newer node"
    ),
    "negative id": Case("cosine", negative_id, "id out of range"),
    "id not below the next id": Case("cosine", id_at_next_id, "id out of range"),
    "next id above 2^63": Case("cosine", set_header(next_label=2**63 + 1), "next id out of range"),
    "deleted flag 2": Case("cosine", deleted_flag_two, "bad deleted flag"),
    "live count off by one": Case("cosine", wrong_live_count, "live count does not match"),
    # stored vectors
    "cosine row not unit length": Case("cosine", scale_row, "not unit length"),
    "cosine row all zeros": Case("cosine", zero_row, "not unit length"),
    "ip row not unit length": Case("ip", scale_row, "not unit length"),
    "NaN in a row": Case("cosine", nan_in_row, "NaN or inf"),
    # graph
    "level-0 link count above 2M": Case("cosine", level0_count_over_2m, "link count out of range"),
    "level-0 link past the last node": Case(
        "cosine", level0_link_past_the_end, "link to a node that does not exist"
    ),
    "upper link count above M": Case("cosine", upper_count_over_m, "link count out of range"),
    "upper link to a node without that level": Case(
        "cosine", upper_link_to_a_level0_node, "bad upper link"
    ),
    "entry point below the top level": Case(
        "cosine", entry_point_below_the_top, "entry point is not on top"
    ),
    "max level above every node": Case(
        "cosine", max_level_above_every_node, "max level does not match node levels"
    ),
    "node level 64": Case("cosine", level_64, "node level out of range"),
    "entry point set in an empty index": Case(
        "empty", set_header(entry_point=3), "entry point out of range"
    ),
    # rotation (checked by the Python layer, which applies it to every query)
    "rotation not orthogonal": Case("ip", rotation_not_orthogonal, "rotation is not orthogonal"),
    "rotation scaled by 1.01": Case("ip", rotation_scaled, "rotation is not orthogonal"),
    "rotation with NaN": Case("ip", rotation_nan, "rotation contains NaN or inf"),
    "rotation one float short": Case(
        "ip", rotation_dropped_size_kept, "rotation size does not match dim"
    ),
    # header fields
    "unknown flag bit": Case("cosine", set_header(flags=3), "unknown flags"),
    "unknown metric": Case("cosine", set_header(metric=3), "unknown metric code"),
    "prefix_dim equal to dim": Case("ip", set_header(prefix_dim=6), "prefix_dim out of range"),
    "M of 1": Case("cosine", set_header(M=1), "M out of range"),
    "ef of 0": Case("cosine", set_header(ef=0), "ef out of range"),
    "dim of 0": Case("empty", set_header(dim=0), "dim out of range"),
    "format version 3": Case("cosine", set_header(format_version=3), "unsupported format version"),
    "version 2 without codes": Case(
        "cosine", set_header(format_version=2), "does not match the quantization flag"
    ),
    "other byte order": Case("cosine", set_header(endian_tag=0x04030201), "other byte order"),
    # metadata (parsed by the Python layer)
    "metadata nested 100000 deep": Case(
        "cosine", set_metadata(NESTED_METADATA), "nested too deeply"
    ),
    "metadata integer of 5000 digits": Case(
        "cosine", set_metadata(HUGE_INTEGER_METADATA), "metadata block is not valid JSON"
    ),
    "metadata not UTF-8": Case(
        "cosine", set_metadata(b'{"user": "\xff"}'), "metadata block is not valid JSON"
    ),
    "metadata a list": Case("cosine", set_metadata(b"[1, 2]"), "not a JSON object"),
    "metadata user a string": Case(
        "cosine", set_metadata(b'{"user": "x"}'), "'user' is not an object"
    ),
}


def crafted(base: bytes, edit: Callable[[V1File], None]) -> bytes:
    parsed = V1File.parse(base)
    edit(parsed)
    return parsed.encode()


def unpickle(data: bytes) -> matry.Index:
    index = matry.Index.__new__(matry.Index)
    index.__setstate__({"index": data})
    return index


@pytest.mark.parametrize("name", sorted(BASES))
def test_the_format_helper_reproduces_saved_files_byte_for_byte(
    name: str, base_files: dict[str, bytes]
) -> None:
    data = base_files[name]
    assert V1File.parse(data).encode() == data


def test_the_format_helper_reproduces_the_golden_file() -> None:
    data = GOLDEN_INDEX.read_bytes()
    assert V1File.parse(data).encode() == data


@pytest.mark.parametrize("name", sorted(BASES))
def test_the_untouched_files_load(name: str, base_files: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / f"{name}.matry"
    path.write_bytes(base_files[name])
    original = BASES[name]()
    for restored in (matry.Index.load(path), unpickle(base_files[name])):
        np.testing.assert_array_equal(restored.ids(), original.ids())
        assert restored.metadata == original.metadata


@pytest.mark.parametrize("name", sorted(CASES))
def test_crafted_file_raises_corrupt_index_error(
    name: str, base_files: dict[str, bytes], tmp_path: Path
) -> None:
    case = CASES[name]
    data = crafted(base_files[case.base], case.edit)
    assert data != base_files[case.base]
    path = tmp_path / "crafted.matry"
    path.write_bytes(data)
    with pytest.raises(matry.CorruptIndexError, match=case.message):
        matry.Index.load(path)
    with pytest.raises(matry.CorruptIndexError, match=case.message):
        unpickle(data)


def test_readded_id_with_the_old_node_deleted_is_valid(base_files: dict[str, bytes]) -> None:
    """The shape the corpus breaks is legal when the older node is the deleted one."""
    parsed = V1File.parse(base_files["cosine"])
    labels, counts = np.unique(parsed.labels, return_counts=True)
    assert (counts > 1).any()
    nodes = np.flatnonzero(parsed.labels == labels[counts > 1][0])
    assert parsed.deleted[nodes[0]] == 1 and parsed.deleted[nodes[-1]] == 0
    restored = unpickle(parsed.encode())
    assert 7 in restored
    restored.remove([7])
    assert 7 not in restored
    restored.add(np.ones(8, dtype=np.float32), ids=[7])
    assert len(unpickle(restored._core.to_bytes())) == len(restored)


def test_ip_rows_need_not_be_unit_length_without_the_unit_norm_flag(
    base_files: dict[str, bytes],
) -> None:
    parsed = V1File.parse(base_files["ip"])
    scale_row(parsed)
    with pytest.raises(matry.CorruptIndexError, match="not unit length"):
        unpickle(parsed.encode())
    parsed.header["flags"] = 0  # an index built with _require_unit_norm=False
    restored = unpickle(parsed.encode())
    assert len(restored) == 20


def test_metadata_nested_within_the_limit_still_loads(base_files: dict[str, bytes]) -> None:
    parsed = V1File.parse(base_files["cosine"])
    parsed.metadata = b'{"user": {"x": ' + b"[" * 50 + b"]" * 50 + b"}}"
    assert unpickle(parsed.encode()).metadata["x"] is not None
