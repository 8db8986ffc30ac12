"""Fuzzing in the suite: a few hundred random mutations of small videos and of store files
(``tests/fuzz_harness.py``, fixed seed), each in bounded time and memory, none ending in a traceback or a lost
good video; and the two ways a damaged HDF5 file made the library hang or allocate gigabytes, as regressions."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import make_dataset, run_flowprep, run_limited
from flowprep.cli import main as flowprep_main
from flowprep.h5guard import attribute_table
from flowprep.store import Store, StoreError, video_path

HARNESS = Path(__file__).with_name("fuzz_harness.py")
ARGS = ["--method", "dis", "--short-side", "0", "--jobs", "1", "--quiet"]


def test_random_mutations_end_in_named_errors_in_bounded_time_and_memory(tmp_path):
    # 100 mutated videos (MJPG AVI and MPEG-4 MP4) beside 2 good ones, then 120 mutated copies of a 6-video store
    # (bytes of its HDF5 and JSON files, attributes, datasets, crafted JPEG headers), each copy verified, shown
    # (info), read, and extracted again. One store mutation took at most 0.9 s in a loaded session; the limit
    # ends a hang with a traceback. The address-space limit only keeps a runaway from swapping the machine: the
    # peak resident memory is what is asserted (a loaded run peaked at 120 MB).
    r = run_limited([sys.executable, HARNESS, tmp_path, "--videos", 100, "--stores", 120, "--seed", 7,
                     "--mutation-limit", 30, "--verbose"], memory_mb=3072, timeout=400)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    started = [x for x in r.stderr.splitlines() if x.startswith('{"store"')]  # the last: where a hang was
    assert r.returncode == 0 and lines and lines[-1].get("summary"), (
        "\n".join(x.get("outcome", "") for x in lines if x.get("outcome") != "ok"), r.stderr[-3000:], started[-1:])
    summary = lines[-1]
    videos, = (x for x in lines if "videos" in x and "outcome" in x)
    stores = [x for x in lines if "store" in x]
    assert summary["crashes"] == 0 and len(stores) == 120 and all(x["outcome"] == "ok" for x in stores)
    assert videos["outcome"] == "ok" and videos["extracted"] + videos["failed"] == 100, videos
    assert 0 < videos["extracted"] < 100 and videos["seconds"] < 120, videos  # 0.6 s in a loaded session
    assert max(x["seconds"] for x in stores) < 15, max(stores, key=lambda x: x["seconds"])
    assert summary["maxrss_kib"] < 800_000, summary


def _sha256_heap_object(path: Path) -> tuple[int, int]:
    """(file offset of the heap collection, of the heap object header) of the ``sha256`` attribute's string."""
    with h5py.File(path, "r") as f:
        (length, collection, index), = attribute_table(f.id).strings["sha256"]
    data = path.read_bytes()
    pos = collection + 16
    while True:  # walk the collection's objects up to it
        obj, size = int.from_bytes(data[pos:pos + 2], "little"), int.from_bytes(data[pos + 8:pos + 16], "little")
        if obj == index:
            assert size == length == 64
            return collection, pos
        pos += 16 + (size + 7) // 8 * 8


@pytest.fixture()
def store(tmp_path):
    root = make_dataset(tmp_path / "ds", per_class=1)
    st = tmp_path / "st"
    assert run_flowprep("extract", root, "-o", st, *ARGS).returncode == 0
    return root, st


def test_a_zeroed_heap_object_header_is_refused_not_walked_for_ever(store):
    # What hung `verify` and `info` for good: the header of the heap object that holds the sha256 string (and
    # those after it) zeroed. The HDF5 library reads it as free space of size 0 and its walk never moves on.
    root, st = store
    vid = Store(st).video_ids()[0]
    path = video_path(st, vid)
    collection, at = _sha256_heap_object(path)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes(16))
    problem = (f"the heap collection at byte {collection} holds an object of size 0 at byte {at}, which does not "
               "fit it (damaged file)")
    r = run_limited([sys.executable, "-m", "flowprep", "verify", st, "--quiet"], memory_mb=1024, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"PROBLEM {vid}: {path}: {problem}"
    r = run_flowprep("extract", root, "-o", st, *ARGS, timeout=60)  # the rerun extracts it again
    assert r.returncode == 0 and f"DAMAGED {vid}: {problem}" in r.stderr, r.stderr
    assert run_flowprep("verify", st, "--quiet").returncode == 0


def test_an_item_declaring_gigabytes_is_refused_before_anything_is_allocated(store):
    # The HDF5 library allocates the length an item's entry declares before it reads the item (1.5 GB seen);
    # flowprep reads items itself and checks the length against the heap object's.
    root, st = store
    vid = Store(st).video_ids()[0]
    path = video_path(st, vid)
    with h5py.File(path, "r") as f:
        table = f["flow_x"].id.get_offset()
    with open(path, "r+b") as f:  # entry 2 of flow_x: (length u32, collection u64, index u32)
        f.seek(table + 2 * 16)
        f.write((4_000_000_000).to_bytes(4, "little"))
    r = run_limited([sys.executable, "-m", "flowprep", "verify", st, "--quiet"], memory_mb=1024, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() in (f"PROBLEM {vid}: {path}: flow_x item 2 is not where its entry says (damaged file)",
                                f"PROBLEM {vid}: {path}: flow_x points past the end of the file (damaged file)")
    with pytest.raises(StoreError, match="flow_x"):
        Store(st).flow(vid, [2])
    np.testing.assert_array_equal(Store(st).flow(vid, [0]).shape, (1, 40, 48, 2))


@pytest.mark.parametrize("name, problem", [
    ("sha256", "attribute sha256=array([0, 1, 2]) is not a sha256 digest (damaged file)"),
    ("id", "holds video array([0, 1, 2]), not '{vid}'"),
    ("method", "made with method array([0, 1, 2]), but store.json says 'dis' (store.json edited, or the file comes "
               "from another store)")])
def test_an_array_where_a_string_attribute_belongs_is_named(store, capsys, name, problem):
    # Found by the harness (seed 21): comparing an array attribute with the expected string raised numpy's
    # "truth value of an array is ambiguous" out of verify.
    root, st = store
    vid = Store(st).video_ids()[0]
    path = video_path(st, vid)
    with h5py.File(path, "r+") as f:
        f.attrs[name] = np.arange(3)
    capsys.readouterr()
    assert flowprep_main(["verify", str(st), "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == f"PROBLEM {vid}: {path}: {problem.format(vid=vid)}"
    assert flowprep_main(["extract", str(root), "-o", str(st), *ARGS]) == 0  # the rerun extracts it again
    assert flowprep_main(["verify", str(st), "--quiet"]) == 0
