"""A FIFO is not a regular file (not an "empty file"); a full disk names the path that could not be written."""
from __future__ import annotations

import os

import pytest

from flowprep.decode import VideoError, read_video
from flowprep.store import write_json_atomic


def test_fifo_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.avi"
    os.mkfifo(fifo)
    with pytest.raises(VideoError, match=r"pipe.avi: not a regular file \(a FIFO, socket or device\)"):
        read_video(fifo)


def test_disk_full_names_the_path(tmp_path):
    # The temporary file the atomic writer uses is a link to /dev/full, where every write fails with ENOSPC.
    path = tmp_path / "index.json"
    os.symlink("/dev/full", tmp_path / f"index.json.tmp-{os.getpid()}")
    with pytest.raises(OSError, match=rf"{path}: no space left on the device to write it"):
        write_json_atomic(path, {"a": "x" * 100000})
    assert not path.exists()
