"""Saving and loading files safely: kill -9 during save, temporary files, odd paths and file types.

What save promises (Index.save's docstring): the target is replaced atomically; a crash can
leave a temporary file ".<16 hex digits>.matry-tmp-<pid>-<n>" beside it, which the next save to
the same target removes once its process is gone; a symlink is followed; an existing target
that is not a regular file is never replaced. Load and read_metadata refuse anything but a
regular file before opening it, so a FIFO cannot block them.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matry
import numpy as np
import pytest


def small_index(n: int = 20, seed: int = 0) -> matry.Index:
    rng = np.random.default_rng(seed)
    ix = matry.Index(dim=8, metric="l2", M=4, seed=seed)
    ix.add(rng.standard_normal((n, 8)).astype(np.float32), num_threads=1)
    ix.metadata = {"n": n}
    return ix


def temporary_prefix(target_name: bytes) -> str:
    """The temporary-file prefix of a target, as documented: FNV-1a 64 of its file name."""
    value = 0xCBF29CE484222325
    for byte in target_name:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f".{value:016x}.matry-tmp-"


TEMPORARY = re.compile(r"^\.[0-9a-f]{16}\.matry-tmp-\d+-\d+$")


def temporaries(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if TEMPORARY.match(name))


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- kill -9 during save ----------------------------------------------------------------------

SAVE_FOREVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import matry

    rng = np.random.default_rng(0)
    ix = matry.Index(dim=1024, metric="l2", M=4, ef_construction=8, seed=0)
    ix.add(rng.standard_normal((2000, 1024)).astype(np.float32), num_threads=1)  # 8 MB
    ix.save(sys.argv[1])
    print("ready", flush=True)
    while True:
        ix.save(sys.argv[1])
    """
)
KILLS = 4


def test_kill_during_save_keeps_the_old_file_and_the_next_save_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "index.matry"
    prefix = temporary_prefix(b"index.matry")
    killed_before_rename = 0
    for _ in range(KILLS):
        with subprocess.Popen(
            [sys.executable, "-c", SAVE_FOREVER, str(path)], stdout=subprocess.PIPE, text=True
        ) as child:
            try:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "ready"
                # Kill while a temporary file exists: the save is writing or fsyncing it.
                deadline = time.monotonic() + 60
                while not any(name.startswith(prefix) for name in os.listdir(tmp_path)):
                    assert time.monotonic() < deadline, "the child never started another save"
                    time.sleep(0.001)
            finally:
                child.kill()
        left = temporaries(tmp_path)
        assert all(name.startswith(prefix + f"{child.pid}-") for name in left), left
        killed_before_rename += bool(left)
        # The target is the child's index, complete, whatever moment the kill hit.
        assert len(matry.Index.load(path)) == 2000
        # The next save (here a different, small index) removes what the killed one left.
        small_index().save(path)
        assert temporaries(tmp_path) == []
        assert os.listdir(tmp_path) == ["index.matry"]
        assert len(matry.Index.load(path)) == 20
    assert killed_before_rename > 0, "no kill landed before the rename; use a bigger index"


# -- temporary files --------------------------------------------------------------------------


def test_save_removes_only_stale_temporaries_of_the_same_target(tmp_path: Path) -> None:
    target = tmp_path / "index.matry"
    prefix = temporary_prefix(b"index.matry")
    other_prefix = temporary_prefix(b"other.matry")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [f"{prefix}{dead_pid()}-0", f"{prefix}{dead_pid()}-17"]
        kept = [
            f"{prefix}{sleeper.pid}-0",  # its process still runs: maybe a save in progress
            f"{prefix}{os.getpid()}-99",  # this process: maybe another thread's save
            f"{other_prefix}{dead_pid()}-0",  # another target's
            f"{prefix}{dead_pid()}-0.bak",  # not exactly the pattern
            f"{prefix}x-0",
            "index.matry.tmp-123-0",  # the old naming: not ours to judge
        ]
        for name in stale + kept:
            (tmp_path / name).write_bytes(b"partial")
        small_index().save(target)
        assert sorted(os.listdir(tmp_path)) == sorted([*kept, "index.matry"])
    finally:
        sleeper.kill()
        sleeper.wait()


SAVE_OVER_THE_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    import matry

    ix = matry.Index(dim=64, metric="l2", M=4, seed=0)
    ix.add(np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32))
    # Writes past 64 KiB fail with EFBIG (instead of killing the process with SIGXFSZ).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
    try:
        ix.save(sys.argv[1])
    except OSError as error:
        print(error)
    """
)


def test_a_save_that_fails_mid_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "index.matry"
    small_index().save(path)
    before = path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", SAVE_OVER_THE_FILE_SIZE_LIMIT, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "write failed" in result.stdout, result.stdout + result.stderr
    assert os.listdir(tmp_path) == ["index.matry"]
    assert path.read_bytes() == before


def test_refused_saves_create_nothing(tmp_path: Path) -> None:
    ix = small_index()
    (tmp_path / "a directory").mkdir()
    with pytest.raises(OSError, match="is a directory"):
        ix.save(tmp_path / "a directory")
    with pytest.raises(OSError, match="No such file or directory"):
        ix.save(tmp_path / "missing" / "index.matry")
    with pytest.raises(OSError, match="names a directory"):
        ix.save(str(tmp_path / "index.matry") + "/")
    assert os.listdir(tmp_path) == ["a directory"]
    assert os.listdir(tmp_path / "a directory") == []


# -- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["save", "load", "read_metadata"])
def test_nul_byte_in_path_raises_value_error(call: str, tmp_path: Path) -> None:
    ix = small_index()
    ix.save(tmp_path / "a")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="^path: contains a NUL byte"):
        if call == "save":
            ix.save(str(tmp_path / "a\0b"))
        elif call == "load":
            matry.Index.load(str(tmp_path / "a\0b"))
        else:
            matry.read_metadata(str(tmp_path / "a\0b"))
    assert sorted(os.listdir(tmp_path)) == before
    assert len(matry.Index.load(tmp_path / "a")) == 20


def test_the_core_refuses_nul_bytes_too(tmp_path: Path) -> None:
    ix = small_index()
    with pytest.raises(ValueError, match="^path: contains a NUL byte"):
        ix._core.save(str(tmp_path / "a\0b"), "{}")
    with pytest.raises(ValueError, match="^path: contains a NUL byte"):
        matry._core.Index.load(str(tmp_path / "a\0b"))
    with pytest.raises(ValueError, match="^path: contains a NUL byte"):
        matry._core.read_header(str(tmp_path / "a\0b"))
    assert os.listdir(tmp_path) == []


def test_empty_path_raises_value_error() -> None:
    with pytest.raises(ValueError, match="^path: empty"):
        small_index().save("")
    with pytest.raises(ValueError, match="^path: empty"):
        matry.Index.load("")


@pytest.mark.parametrize("length", [250, 255])
def test_long_file_names_save_and_load(length: int, tmp_path: Path) -> None:
    path = tmp_path / ("n" * (length - len(".matry")) + ".matry")
    assert len(path.name) == length
    ix = small_index()
    ix.save(path)
    ix.save(path)  # replacing works too
    assert os.listdir(tmp_path) == [path.name]
    assert len(matry.Index.load(path)) == 20
    assert matry.read_metadata(path)["count"] == 20


def test_non_utf8_file_name_round_trips(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.matry")  # latin-1 bytes: a surrogate escape in Python
    path = tmp_path / name
    small_index().save(path)
    assert os.listdir(os.fsencode(tmp_path)) == [b"caf\xe9.matry"]
    assert len(matry.Index.load(path)) == 20
    with pytest.raises(OSError, match=r"caf\\xe9"):  # the message shows the byte, escaped
        small_index().save(tmp_path / name / "x")


def test_relative_path_saves_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    small_index().save("index.matry")
    small_index().save("index.matry")
    assert os.listdir(tmp_path) == ["index.matry"]
    assert len(matry.Index.load("index.matry")) == 20


# -- symlinks ---------------------------------------------------------------------------------


def test_save_through_a_symlink_replaces_the_file_it_points_to(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = real_dir / "index.matry"
    small_index(10).save(real)
    link = tmp_path / "link.matry"
    link.symlink_to(Path("real") / "index.matry")  # relative link
    small_index(30, seed=1).save(link)
    assert link.is_symlink()
    assert os.readlink(link) == os.path.join("real", "index.matry")
    assert len(matry.Index.load(real)) == 30
    assert len(matry.Index.load(link)) == 30
    assert sorted(os.listdir(tmp_path)) == ["link.matry", "real"]
    assert os.listdir(real_dir) == ["index.matry"]  # the temporary file was written there


def test_save_through_a_chain_of_symlinks_and_a_dangling_one(tmp_path: Path) -> None:
    (tmp_path / "b").symlink_to("c")
    (tmp_path / "a").symlink_to(tmp_path / "b")  # absolute, to a relative one
    small_index().save(tmp_path / "a")  # "c" does not exist yet: it is created
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    assert stat.S_ISREG(os.lstat(tmp_path / "c").st_mode)
    assert len(matry.Index.load(tmp_path / "c")) == 20


def test_symlink_loop_raises_os_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError):
        small_index().save(tmp_path / "a")
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_replaced_file_keeps_its_permission_bits(tmp_path: Path) -> None:
    path = tmp_path / "index.matry"
    small_index().save(path)
    os.chmod(path, 0o640)
    small_index(30).save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert len(matry.Index.load(path)) == 30


# -- files that are not regular files ---------------------------------------------------------


def non_regular(kind: str, tmp_path: Path) -> Path:
    if kind == "fifo":
        path = tmp_path / "fifo.matry"
        os.mkfifo(path)
        return path
    if kind == "device":
        return Path("/dev/null")
    if kind == "directory":
        path = tmp_path / "dir.matry"
        path.mkdir()
        return path
    if kind == "symlink to a fifo":
        os.mkfifo(tmp_path / "fifo")
        (tmp_path / "link.matry").symlink_to("fifo")
        return tmp_path / "link.matry"
    raise AssertionError(kind)


KINDS = ["fifo", "device", "directory", "symlink to a fifo"]


@pytest.mark.parametrize("kind", KINDS)
def test_save_never_replaces_a_non_regular_file(kind: str, tmp_path: Path) -> None:
    path = non_regular(kind, tmp_path)
    before_mode = os.stat(path).st_mode
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OSError, match="not a regular file; save never replaces one"):
        small_index().save(path)
    assert os.stat(path).st_mode == before_mode
    assert sorted(os.listdir(tmp_path)) == before


LOAD_IN_CHILD = textwrap.dedent(
    """
    import sys
    import matry

    for call in (matry.Index.load, matry.read_metadata, matry._core.Index.load,
                 matry._core.read_header):
        try:
            call(sys.argv[1])
        except OSError as error:
            print(type(error).__name__, error)
        else:
            print("no error")
    """
)


@pytest.mark.parametrize("kind", KINDS)
def test_load_refuses_a_non_regular_file_without_blocking(kind: str, tmp_path: Path) -> None:
    """Run in a child with a timeout: opening a FIFO for reading would wait for a writer."""
    path = non_regular(kind, tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_IN_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4, result.stdout + result.stderr
    for line in lines:
        assert line.startswith(("OSError", "IsADirectoryError")), line
        assert "not a regular index file" in line or "is a directory" in line, line
