"""Shared helpers for sparkdl benchmarks: test data, a Spark session, timing, result files."""
import json
import os
import platform
import statistics
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def make_jpegs(folder, count=500, width=500, height=375, seed=0):
    """``count`` JPEGs of ``width x height``: random crops of scikit-image's photos, so their
    content and compressed size are those of real photos. Reused when already there."""
    import numpy as np
    from PIL import Image
    from skimage import data

    os.makedirs(folder, exist_ok=True)
    existing = [f for f in os.listdir(folder) if f.endswith(".jpg")]
    if len(existing) >= count:
        return folder
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(data, n)()) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        scale = rng.uniform(0.6, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        img = photo.crop((x, y, x + cw, y + ch)).resize((width, height), Image.Resampling.BILINEAR)
        img.save(os.path.join(folder, f"img_{i:05d}.jpg"), quality=90)
    return folder


def spark_session(master="local[2]", conf=None):
    from sparkdl.utils.session import local_session

    spark = local_session(master, app_name="sparkdl-bench", conf=conf)
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def timed(fn, repeat=3):
    """Run ``fn`` once untimed (warm-up), then ``repeat`` times; return the median seconds."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def timed_rounds(fns, rounds=5):
    """Run each of ``{name: fn}`` once untimed (warm-up), then ``rounds`` rounds that run every
    ``fn`` in turn, so a shared machine's drift falls on all alike; return
    ``{name: (median seconds, all seconds)}``."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(ts), ts) for name, ts in times.items()}


def machine():
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def save_result(name, result):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    result = dict(result, benchmark=name, machine=machine(), timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    with open(os.path.join(RESULTS_DIR, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return result
