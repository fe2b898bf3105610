"""sparkdl.utils.worker: helpers of the Python workers that need no Spark."""
import gc

import pyarrow as pa

from sparkdl.engine import model_cache
from sparkdl.utils.worker import freezeWorkerHeap, iterChunks


def test_iter_chunks_splits_and_merges_to_the_size():
    batches = [pa.array(range(0, 5)), pa.array(range(5, 7)), pa.array([], pa.int64()),
               pa.array(range(7, 18))]
    chunks = [c.to_pylist() for c in iterChunks(iter(batches), 4)]
    assert chunks == [list(range(i, min(i + 4, 18))) for i in range(0, 18, 4)]


def test_iter_chunks_keeps_columns_of_a_tuple_together():
    structs = pa.StructArray.from_arrays([pa.array([1, 2, 3]), pa.array([b"a", b"bb", b"c"])],
                                         names=["h", "data"])
    batches = [(structs.slice(1), pa.array(["x", "y"])), (structs, pa.array(["p", "q", "r"]))]
    chunks = [(s.to_pylist(), o.to_pylist()) for s, o in iterChunks(iter(batches), 3)]
    assert [o for _, o in chunks] == [["x", "y", "p"], ["q", "r"]]
    assert [[row["data"] for row in s] for s, _ in chunks] == [[b"bb", b"c", b"a"], [b"bb", b"c"]]


def test_freeze_worker_heap_freezes_once():
    model_cache.clear()
    assert gc.get_freeze_count() == 0
    freezeWorkerHeap()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    kept = [object() for _ in range(10)]  # noqa: F841  (new objects stay collectable)
    freezeWorkerHeap()
    # Not refrozen: a second freeze would add the new objects. The count may drop by the frozen
    # objects other threads free meanwhile (a clean-clone run saw 553343 -> 553342).
    assert gc.get_freeze_count() <= frozen
