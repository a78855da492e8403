import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from brainssl.io import atomic_write, save_npy, write_json, write_table

WRITER = """
import sys, time
from brainssl.io import atomic_write
with atomic_write(sys.argv[1], "wb") as handle:
    for _ in range(10_000):
        handle.write(b"x" * 65536)
        handle.flush()
        print("wrote", flush=True)
        time.sleep(0.01)
"""


def test_a_killed_writer_leaves_no_complete_looking_file(tmp_path):
    target = tmp_path / "big.bin"
    target.write_bytes(b"previous complete version")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    for _ in range(5):  # let it write a few chunks
        assert proc.stdout.readline().startswith("wrote")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    assert target.read_bytes() == b"previous complete version"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert leftovers and all(p.name.startswith(".big.bin.") for p in leftovers), leftovers


def test_a_failing_writer_cleans_up_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.tsv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_helpers_write_complete_files(tmp_path):
    write_json(tmp_path / "a.json", {"b": np.int64(2), "a": np.array([1.0])})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1.0\n  ],\n  "b": 2\n}\n'
    frame = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    for suffix in (".tsv", ".parquet"):
        write_table(tmp_path / f"t{suffix}", frame)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.tsv", sep="\t"), frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), frame)
    save_npy(tmp_path / "a.npy", np.arange(5, dtype=np.uint8))
    assert np.load(tmp_path / "a.npy", mmap_mode="r").tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy", "t.parquet", "t.tsv"]


def test_atomic_write_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="'r'"):
        with atomic_write(tmp_path / "x", "r"):
            pass


def test_temporary_name_keeps_the_suffix_for_format_detection(tmp_path):
    from brainssl.io import atomic_path

    with atomic_path(tmp_path / "img.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"1")
    assert (tmp_path / "img.nii.gz").exists()
    assert os.listdir(tmp_path) == ["img.nii.gz"]


def test_written_files_get_the_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "plain.txt").write_text("x")
        write_json(tmp_path / "atomic.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "atomic.json").stat().st_mode & 0o777 == (
        tmp_path / "plain.txt"
    ).stat().st_mode & 0o777
