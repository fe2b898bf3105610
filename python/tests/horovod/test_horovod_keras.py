"""Keras 3 data-parallel training really averages gradients, on both backends: two ranks with
different data end with identical weights, equal to one process trained on the union of the
data with the same global batch."""
import os
import sys

import numpy as np
import pytest

from sparkdl.horovod import HorovodRunner

from pyspark import cloudpickle  # noqa: E402
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SAMPLES, FEATURES, LOCAL_BATCH, EPOCHS = 64, 4, 8, 3


def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, FEATURES)).astype("float32")
    noise = 0.1 * rng.normal(size=(SAMPLES, 1))
    y = (np.sin(x).sum(axis=1, keepdims=True) + noise).astype("float32")
    return x, y


def shard(x, rank, size):
    """Rank ``rank``'s batches: with global batch ``LOCAL_BATCH * size``, global batch k is
    made of every rank's local batch k, in rank order."""
    blocks = x.reshape(-1, size, LOCAL_BATCH, *x.shape[1:])
    return blocks[:, rank].reshape(-1, *x.shape[1:])


def train(out_dir):
    """Each rank trains on its own shard, starting from its own (different) random weights;
    the broadcast gives every rank rank 0's. Returns and saves the final weights."""
    import keras

    from sparkdl import horovod as shvd
    from sparkdl.horovod.tensorflow.keras import (
        BroadcastGlobalVariablesCallback,
        DistributedOptimizer,
        LogCallback,
    )

    rank, size = shvd.rank(), shvd.size()
    x, y = dataset()
    x, y = shard(x, rank, size), shard(y, rank, size)
    keras.utils.set_random_seed(100 + rank)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(1),
    ])
    # Rank 0's weights before training: every rank starts from them (the broadcast).
    np.savez(os.path.join(out_dir, f"rank{rank}-of-{size}-initial.npz"), *model.get_weights())
    optimizer = DistributedOptimizer(keras.optimizers.SGD(0.05, momentum=0.9))
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    model.fit(x, y, batch_size=LOCAL_BATCH * (2 // size), epochs=EPOCHS, shuffle=False,
              verbose=0, callbacks=[BroadcastGlobalVariablesCallback(0), LogCallback()])
    weights = model.get_weights()
    np.savez(os.path.join(out_dir, f"rank{rank}-of-{size}.npz"), *weights)
    return weights


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """One process, all the data, global batch 2 * LOCAL_BATCH, rank 0's initial weights."""
    out = tmp_path_factory.mktemp("single")
    runner = HorovodRunner(np=-1, driver_log_verbosity="log_callback_only")
    return runner.run(train, out_dir=str(out))


def test_shards_interleave_into_the_global_batches():
    x = np.arange(SAMPLES)
    s0, s1 = shard(x, 0, 2), shard(x, 1, 2)
    assert list(s0[:LOCAL_BATCH]) + list(s1[:LOCAL_BATCH]) == list(x[: 2 * LOCAL_BATCH])
    assert sorted(np.concatenate([s0, s1])) == list(x)


def test_two_ranks_average_gradients(spark, backend, single_process, tmp_path, capfd):
    weights = HorovodRunner(np=2, backend=backend).run(train, out_dir=str(tmp_path))
    rank0 = np.load(tmp_path / "rank0-of-2.npz")
    rank1 = np.load(tmp_path / "rank1-of-2.npz")
    for name in rank0.files:  # the ranks stayed identical
        np.testing.assert_array_equal(rank0[name], rank1[name])
    for got, want in zip(weights, single_process):  # ... and equal to one process on all data
        assert_close(got, want, 1e-5)
    # Training moved the weights away from rank 0's initial ones (where every rank starts),
    # so agreeing was not trivial.
    initial = np.load(tmp_path / "rank0-of-2-initial.npz")
    moved = max(np.abs(w - initial[f"arr_{i}"]).max() for i, w in enumerate(weights))
    assert moved > 1e-2, moved
    out = capfd.readouterr().out
    assert f"[0]<log>:epoch {EPOCHS}/{EPOCHS}: loss=" in out
    assert f"[1]<log>:epoch 1/{EPOCHS}: loss=" in out
