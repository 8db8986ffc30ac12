"""Store files open without HDF5 file locking: the locks fail on NFS and Lustre (h5py issues 1082, 1101)."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from flowprep.store import NO_LOCKING, Store, video_path, write_json_atomic, write_video

HOLD_LOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.flock(f, fcntl.LOCK_EX)   # what a writer holding the file, or a lock server that says no, looks like
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def store(tmp_path):
    write_json_atomic(tmp_path / "store.json", {"schema": 1, "bound": 20.0})
    write_json_atomic(tmp_path / "manifest.json", {"classes": ["a"], "videos": [{"id": "v", "label": 0}],
                                                   "splits": {}})
    frames = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    attrs = {"num_frames": 3, "height": 8, "width": 8, "bound": 20.0, "mapping": "symmetric"}
    write_video(video_path(tmp_path, "v"), frames=frames, frame_index=np.arange(3),
                codes_or_flow=np.full((2, 8, 8, 2), 128, np.uint8), attrs=attrs)
    return tmp_path


def test_reads_despite_a_lock_that_hdf5_locking_would_trip_on(store):
    assert NO_LOCKING == {"locking": False}  # h5py >= 3.5 on HDF5 >= 1.12.1, as pinned by this project
    path = video_path(store, "v")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OSError, match="lock"):  # HDF5's default: it wants the lock and cannot have it
            h5py.File(path, "r", locking=True)
        st = Store(store)
        assert st.flow("v", [0, 1]).shape == (2, 8, 8, 2)
        assert st.frames("v", [2]).shape == (1, 8, 8, 3)
        st.close()
    finally:
        holder.kill()
        holder.wait()
