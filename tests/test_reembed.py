"""Collection.reembed as a migration: estimate, checkpoints, resume after a kill, and the
contract (the old collection keeps serving; vectors of two models never meet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matry._migration import MigrationEstimate
from matry.collection import Collection
from matry.encoder import Encoder, fingerprints_match
from matry.errors import ContractError, CorruptIndexError
from onnx_models import TEXTS, write_export

BATCH = 8
#: 80 texts of varied lengths (10 blocks of 8), ids not contiguous, metadata on each.
DOCUMENTS = [f"{TEXTS[i % len(TEXTS)]} {' '.join(['cat'] * (i % 7))} item {i}" for i in range(80)]
IDS = [1000 + 3 * i for i in range(len(DOCUMENTS))]
METADATA = [{"n": i, "even": i % 2 == 0} for i in range(len(DOCUMENTS))]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny models: the old one, the new one, and another new one."""
    root = tmp_path_factory.mktemp("reembed-models")
    return {
        "old": write_export(root / "old", pooling="mean", seed=10).directory,
        "new": write_export(root / "new", pooling="cls", seed=11).directory,
        "other": write_export(root / "other", pooling="max", seed=12).directory,
    }


@pytest.fixture()
def old_collection(models: dict[str, Path]) -> Collection:
    collection = Collection(Encoder.from_dir(models["old"]), M=8, ef_construction=32, seed=1)
    collection.add(DOCUMENTS, ids=IDS, metadata=METADATA)
    return collection


class CountingEncoder(Encoder):
    """The real encoder, counting the texts it is asked to encode."""

    encoded: int = 0

    def encode(self, texts: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        vectors = super().encode(texts, *args, **kwargs)
        self.encoded += vectors.shape[0]
        return vectors


def _assert_same_collection(a: Collection, b: Collection) -> None:
    assert a.fingerprint == b.fingerprint
    assert a.ids().tolist() == b.ids().tolist()
    for item_id in a.ids().tolist():
        assert a.get_text(item_id) == b.get_text(item_id)
        assert a.get_metadata(item_id) == b.get_metadata(item_id)
    np.testing.assert_array_equal(a.index.get(a.ids()), b.index.get(b.ids()))


# ------------------------------------------------------------------ the migration


def test_reembed_encodes_every_text_with_the_new_model_only(
    old_collection: Collection, models: dict[str, Path]
) -> None:
    new_encoder = Encoder.from_dir(models["new"])
    before = old_collection.index.get(old_collection.ids()).copy()
    moved = old_collection.reembed(new_encoder, progress=False, batch_size=BATCH)
    assert moved.fingerprint == new_encoder.fingerprint
    assert not fingerprints_match(moved.fingerprint, old_collection.fingerprint)
    assert moved.ids().tolist() == IDS
    for item_id, text, meta in zip(IDS, DOCUMENTS, METADATA):
        assert moved.get_text(item_id) == text and moved.get_metadata(item_id) == meta
    # every vector of the new index is the new model's vector of its text: none left over
    np.testing.assert_allclose(moved.index.get(IDS), new_encoder.encode(DOCUMENTS), atol=1e-5)
    # the old collection is unchanged and still answers with old-model vectors
    np.testing.assert_array_equal(old_collection.index.get(old_collection.ids()), before)
    hits = old_collection.search(DOCUMENTS[5], k=3)
    assert hits[0].id == IDS[5]
    assert moved.search(DOCUMENTS[5], k=3)[0].id == IDS[5]
    # and one collection's vectors are refused by the other
    with pytest.raises(ContractError):
        old_collection.search_vectors(new_encoder.encode(DOCUMENTS[5]), moved.fingerprint)


def test_estimate_is_made_up_front_and_reported(
    old_collection: Collection, models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    counting = CountingEncoder.from_dir(models["new"])
    seen: list[tuple[MigrationEstimate, int]] = []
    moved = old_collection.reembed(
        counting,
        progress=True,
        batch_size=BATCH,
        on_estimate=lambda estimate: seen.append((estimate, counting.encoded)),
    )
    assert len(moved) == len(DOCUMENTS)
    ((estimate, encoded_by_then),) = seen
    assert encoded_by_then == BATCH  # measured on the first block, before the rest ran
    assert estimate.total_texts == len(DOCUMENTS) and estimate.resumed_from == 0
    assert estimate.remaining_texts == len(DOCUMENTS) and estimate.sample_texts == BATCH
    assert 0 < estimate.sample_seconds <= estimate.estimated_seconds
    assert estimate.sample_tokens > 0
    err = capsys.readouterr().err
    assert "~" in err and "estimated from 8 texts" in err
    assert f"{len(DOCUMENTS)}/{len(DOCUMENTS)}" in err  # the progress bar


def test_old_collection_keeps_serving_during_the_migration(
    old_collection: Collection, models: dict[str, Path]
) -> None:
    halfway = threading.Event()
    resume = threading.Event()

    class PausingEncoder(Encoder):
        calls = 0

        def encode(self, texts: Any, *args: Any, **kwargs: Any) -> np.ndarray:
            self.calls += 1
            if self.calls == 5:
                halfway.set()
                assert resume.wait(30)
            return super().encode(texts, *args, **kwargs)

    pausing = PausingEncoder.from_dir(models["new"])
    result: list[Collection] = []
    worker = threading.Thread(
        target=lambda: result.append(
            old_collection.reembed(pausing, progress=False, batch_size=BATCH)
        )
    )
    worker.start()
    try:
        assert halfway.wait(30)
        # mid-migration: the old collection answers, with its own model, unchanged
        assert old_collection.search(DOCUMENTS[40], k=1)[0].id == IDS[40]
        assert len(old_collection) == len(DOCUMENTS)
        assert not result  # the new collection does not exist before it is complete
    finally:
        resume.set()
        worker.join(60)
    (moved,) = result
    assert moved.search(DOCUMENTS[40], k=1)[0].id == IDS[40]


# ------------------------------------------------------------------ checkpoints and resume

KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from matry.collection import Collection
    from matry.encoder import Encoder

    saved, old_dir, new_dir, checkpoint, batch = sys.argv[1:6]

    class KillAfterFirstCheckpoint(Encoder):
        def encode(self, texts, *args, **kwargs):
            if (Path(checkpoint) / "manifest.json").exists():
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a real crash
            return super().encode(texts, *args, **kwargs)

    old = Collection.load(saved, encoder=Encoder.from_dir(old_dir))
    old.reembed(
        KillAfterFirstCheckpoint.from_dir(new_dir),
        progress=False,
        batch_size=int(batch),
        checkpoint=checkpoint,
        checkpoint_every=2 * int(batch),
    )
    print("finished without being killed")
    """
)


def _run_killed_migration(
    old_collection: Collection, models: dict[str, Path], tmp_path: Path
) -> Path:
    """Runs a migration in a subprocess that SIGKILLs itself right after its first
    checkpoint; returns the checkpoint directory it left."""
    saved = tmp_path / "old.matry"
    old_collection.save(saved)
    checkpoint = tmp_path / "migration.ckpt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_SCRIPT,
            str(saved),
            str(models["old"]),
            str(models["new"]),
            str(checkpoint),
            str(BATCH),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == -9, (completed.returncode, completed.stdout, completed.stderr)
    return checkpoint


def test_a_killed_migration_resumes_where_it_stopped(
    old_collection: Collection, models: dict[str, Path], tmp_path: Path
) -> None:
    checkpoint = _run_killed_migration(old_collection, models, tmp_path)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["done"] == 2 * BATCH  # one checkpoint, after two blocks
    assert [c["count"] for c in manifest["chunks"]] == [2 * BATCH]

    counting = CountingEncoder.from_dir(models["new"])
    estimates: list[MigrationEstimate] = []
    resumed = old_collection.reembed(
        counting,
        progress=False,
        batch_size=BATCH,
        checkpoint=checkpoint,
        checkpoint_every=2 * BATCH,
        on_estimate=estimates.append,
    )
    assert counting.encoded == len(DOCUMENTS) - 2 * BATCH  # only the remainder was encoded
    assert estimates[0].resumed_from == 2 * BATCH
    assert estimates[0].remaining_texts == len(DOCUMENTS) - 2 * BATCH
    assert not checkpoint.exists()  # removed once the new collection is complete

    uninterrupted = old_collection.reembed(
        Encoder.from_dir(models["new"]), progress=False, batch_size=BATCH
    )
    _assert_same_collection(resumed, uninterrupted)
    np.testing.assert_allclose(
        resumed.index.get(IDS), Encoder.from_dir(models["new"]).encode(DOCUMENTS), atol=1e-5
    )
    print(
        f"resumed migration: {counting.encoded} of {len(DOCUMENTS)} texts encoded after the "
        f"kill; vectors identical to an uninterrupted run"
    )


def test_checkpoint_of_another_encoder_or_collection_is_refused(
    old_collection: Collection, models: dict[str, Path], tmp_path: Path
) -> None:
    checkpoint = _run_killed_migration(old_collection, models, tmp_path)
    files = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    with pytest.raises(ContractError, match="never mixed"):
        old_collection.reembed(
            Encoder.from_dir(models["other"]), progress=False, checkpoint=checkpoint
        )
    with pytest.raises(ContractError, match="never mixed"):  # same model, other dims
        old_collection.reembed(
            Encoder.from_dir(models["new"]), progress=False, checkpoint=checkpoint, dims=16
        )
    changed = Collection(Encoder.from_dir(models["old"]), M=8, ef_construction=32)
    changed.add(DOCUMENTS[:-1], ids=IDS[:-1], metadata=METADATA[:-1])
    with pytest.raises(ContractError, match="another collection"):
        changed.reembed(Encoder.from_dir(models["new"]), progress=False, checkpoint=checkpoint)
    # the refusals changed nothing: the checkpoint still resumes
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir()} == files
    counting = CountingEncoder.from_dir(models["new"])
    old_collection.reembed(counting, progress=False, batch_size=BATCH, checkpoint=checkpoint)
    assert counting.encoded == len(DOCUMENTS) - 2 * BATCH


def test_damaged_checkpoints_are_refused(
    old_collection: Collection, models: dict[str, Path], tmp_path: Path
) -> None:
    checkpoint = _run_killed_migration(old_collection, models, tmp_path)
    new_encoder = Encoder.from_dir(models["new"])
    chunk = checkpoint / "vectors-000000.npy"
    original = chunk.read_bytes()
    chunk.write_bytes(original[:-4] + b"\x00\x00\x80\x7f")  # last float -> inf, hash changes
    with pytest.raises(CorruptIndexError, match="sha256"):
        old_collection.reembed(new_encoder, progress=False, checkpoint=checkpoint)
    chunk.write_bytes(original)
    (checkpoint / "manifest.json").write_text("{ torn")
    with pytest.raises(CorruptIndexError, match="manifest"):
        old_collection.reembed(new_encoder, progress=False, checkpoint=checkpoint)


def test_leftover_temporary_files_are_ignored(
    old_collection: Collection, models: dict[str, Path], tmp_path: Path
) -> None:
    checkpoint = _run_killed_migration(old_collection, models, tmp_path)
    # what a kill between writing a chunk and its manifest leaves behind
    (checkpoint / "vectors-000001.npy.tmp").write_bytes(b"half a chunk")
    (checkpoint / "vectors-000001.npy").write_bytes(b"a chunk the manifest does not list")
    counting = CountingEncoder.from_dir(models["new"])
    resumed = old_collection.reembed(
        counting, progress=False, batch_size=BATCH, checkpoint=checkpoint
    )
    assert counting.encoded == len(DOCUMENTS) - 2 * BATCH
    assert len(resumed) == len(DOCUMENTS)
    assert not checkpoint.exists()


def test_checkpointed_run_without_interruption(
    old_collection: Collection, models: dict[str, Path], tmp_path: Path
) -> None:
    checkpoint = tmp_path / "fresh.ckpt"
    moved = old_collection.reembed(
        Encoder.from_dir(models["new"]),
        progress=False,
        batch_size=BATCH,
        checkpoint=checkpoint,
        checkpoint_every=3,  # every block then
    )
    plain = old_collection.reembed(
        Encoder.from_dir(models["new"]), progress=False, batch_size=BATCH
    )
    _assert_same_collection(moved, plain)
    assert not checkpoint.exists()


# ------------------------------------------------------------------ bad input


def test_bad_arguments_raise_and_change_nothing(
    old_collection: Collection, models: dict[str, Path], tmp_path: Path
) -> None:
    new_encoder = Encoder.from_dir(models["new"])
    with pytest.raises(TypeError, match="new_encoder"):
        old_collection.reembed("not an encoder", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint_every"):
        old_collection.reembed(new_encoder, progress=False, checkpoint_every=0)
    with pytest.raises(ValueError, match="batch_size"):
        old_collection.reembed(new_encoder, progress=False, batch_size=0)
    with pytest.raises(TypeError, match="on_estimate"):
        old_collection.reembed(new_encoder, progress=False, on_estimate=3)  # type: ignore[arg-type]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        old_collection.reembed(new_encoder, progress=False, checkpoint=a_file)
    foreign = tmp_path / "someone-elses"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a matry re-embedding checkpoint"):
        old_collection.reembed(new_encoder, progress=False, checkpoint=foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert len(old_collection) == len(DOCUMENTS)


def test_empty_collection(models: dict[str, Path], tmp_path: Path) -> None:
    empty = Collection(Encoder.from_dir(models["old"]))
    moved = empty.reembed(Encoder.from_dir(models["new"]), progress=True, checkpoint=tmp_path / "c")
    assert len(moved) == 0
    assert moved.fingerprint == Encoder.from_dir(models["new"]).fingerprint
