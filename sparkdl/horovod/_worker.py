"""Entry point of one rank's process: ``python -m sparkdl.horovod._worker``.

Started by the rank's supervisor (:mod:`sparkdl.horovod._supervisor`) with the rank's
environment already set. Reads ``main`` and its kwargs (cloudpickled, length-prefixed) from
stdin, runs ``main(**kwargs)``, and writes the outcome to ``$SPARKDL_HOROVOD_RESULT``:
``("ok", cloudpickled value or None)`` or ``("error", traceback text, time of failure)``.

Stdin stays open for the rank's lifetime: when the supervisor dies (task killed, driver gone),
stdin reaches EOF and the whole process group is killed, so no rank outlives its task.
"""
import os
import pickle
import signal
import sys
import threading
import time
import traceback

RESULT_ENV = "SPARKDL_HOROVOD_RESULT"


def _die_with_parent(stdin):
    try:
        while stdin.read(65536):
            pass
    except (OSError, ValueError):
        pass
    _kill_group()


def _kill_group():
    try:
        if os.getpgrp() == os.getpid():  # started as its own group (always, by the supervisor)
            os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(137)


def _set_parent_death_signal():
    # Linux only: the kernel kills this process when its parent dies, even if Python is stuck.
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # pragma: no cover - best effort, the stdin watchdog still applies
        pass


def _read_exactly(stream, n):
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError("the rank's supervisor closed stdin before sending main")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _setup_backend():
    from sparkdl.horovod import backend

    if backend() == "tensorflow":
        # MultiWorkerMirroredStrategy must exist before TensorFlow runs its first op
        # ("Collective ops must be configured at program startup"), so it is created here,
        # before main; sparkdl.horovod.tensorflow.strategy() returns it.
        from sparkdl.horovod.tensorflow import strategy

        strategy()


def _write_result(path, outcome):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def main():
    ppid = os.getppid()
    _set_parent_death_signal()
    if os.getppid() != ppid:  # the parent died before prctl took effect
        _kill_group()
    stdin = sys.stdin.buffer
    payload = _read_exactly(stdin, int.from_bytes(_read_exactly(stdin, 8), "big"))
    threading.Thread(target=_die_with_parent, args=(stdin,), name="parent-watch",
                     daemon=True).start()

    from pyspark import cloudpickle

    from sparkdl.horovod import rank

    result_path = os.environ[RESULT_ENV]
    code = 0
    try:
        fn, kwargs = cloudpickle.loads(payload)
        _setup_backend()
        try:
            value = fn(**kwargs)
        except SystemExit as e:  # main calling sys.exit(0) is a normal return
            if e.code not in (None, 0):
                raise
            value = None
        data = None
        if rank() == 0:
            try:
                data = cloudpickle.dumps(value)
            except Exception as e:
                raise TypeError(
                    f"main's return value ({type(value).__name__}) cannot be pickled to send "
                    f"it to the driver: {e}"
                ) from e
        outcome = ("ok", data)
    except BaseException:
        failed_at = time.time()  # lets the driver tell a root failure from its aftermath
        text = traceback.format_exc()
        sys.stderr.write(text)
        outcome = ("error", text, failed_at)
        code = 1
    _write_result(result_path, outcome)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        # Skip interpreter teardown: TensorFlow's and Horovod's exit hooks can wait on peers
        # that have already gone; the outcome is written, so nothing is lost.
        os._exit(code)


if __name__ == "__main__":
    main()
