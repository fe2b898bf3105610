"""What a bad row becomes: the one place that decides it, for every inference stage, SQL
function, :func:`sparkdl.readImages` and :class:`sparkdl.ImageLoader`.

A row whose input cannot be read, decoded, loaded or fed to the model gives a null output and
a one-line reason (in the stage's error column when it has one; SQL functions and stages
without one give the null only), never a failed task.

- **A row's failure** is any :class:`Exception` raised while handling that row alone: reading
  its file (``OSError``, pyarrow's errors, an unknown URI scheme), decoding it
  (:class:`sparkdl.image.imageIO.DecodeError`), the user's ``imageLoader`` /
  ``preprocessor`` / ``decode_f`` (whatever it raises), an array the model cannot take
  (:class:`RowError`).
- **A job's failure** is everything else, and is never caught here: ``MemoryError`` and the
  ``BaseException`` s that are not ``Exception`` (``KeyboardInterrupt``, ``SystemExit``,
  ``GeneratorExit``), and whatever happens outside a row, such as a model that cannot be
  loaded or a ``predict`` call that fails on a whole batch.

The wording, by the step (``what``) that failed:

- :class:`RowError` (sparkdl's own checks, e.g. ``"imageLoader returned shape 3 x 3; the model
  takes 224 x 224 x 3"``) and ``DecodeError`` (e.g. ``"empty file"``,
  ``"cannot identify image file: ..."``): their own message;
- ``what="image struct"``: ``"malformed image struct: <cause>"`` (see also
  :func:`malformedStruct`);
- ``what="read"`` (sparkdl reading a file by URI): ``"cannot read file: <cause>"``, the cause
  naming the file (``"cannot read file: no filesystem for scheme s3a: s3a://b/k.jpg ..."``,
  ``"cannot read file: [Errno 2] No such file or directory: '/x.png'"``);
- a user function (``what`` is its name): ``"<what> failed: <Type>: <message>"``, e.g.
  ``"imageLoader failed: ValueError: ..."``.
"""
from contextlib import contextmanager

import pyarrow as pa

__all__ = ["RowError", "READ", "DECODE", "STRUCT", "isRowFailure", "reasonOf",
           "malformedStruct", "RowErrors"]

#: ``what`` for sparkdl reading a row's file by URI.
READ = "read"
#: ``what`` for sparkdl decoding a row's file bytes.
DECODE = "decode"
#: ``what`` for sparkdl reading a row's image struct.
STRUCT = "image struct"


class RowError(ValueError):
    """A row sparkdl cannot use, with its reason as the message (e.g. a loader's array the
    model cannot take). A ``ValueError``, so that driver-side checks of the same rule (e.g.
    :func:`sparkdl.engine.image_file_udf.checkPreprocessor`) raise it as one."""


def isRowFailure(exc):
    """Whether ``exc``, raised while handling one row, makes that row null (True) or fails
    the job (False: ``MemoryError`` and every ``BaseException`` that is not an
    ``Exception``)."""
    return isinstance(exc, Exception) and not isinstance(exc, MemoryError)


def reasonOf(exc, what):
    """The one-line reason of a row's failure ``exc`` raised in step ``what``
    (:data:`READ`, :data:`DECODE`, or the name of the user's function, e.g.
    ``"imageLoader"``); see the module's docstring."""
    if isinstance(exc, RowError):  # also sparkdl.image.imageIO.DecodeError
        return str(exc)
    if what == STRUCT:
        return f"malformed image struct: {exc}"
    if what in (READ, DECODE):
        if isinstance(exc, OSError):
            return f"cannot read file: {exc}"
        verb = "read" if what == READ else "decode"
        return f"cannot {verb} file: {type(exc).__name__}: {exc}"
    text = " ".join(str(exc).split())  # one line, whatever the user's message
    return f"{what} failed: {type(exc).__name__}: {text}"


def malformedStruct(nbytes, height, width, nChannels, itemsize=1):
    """The reason of an image struct whose data does not match its header, e.g.
    ``"malformed image struct: data has 10 bytes, height x width x nChannels = 4 x 4 x 3
    needs 48"`` (``x 4 bytes`` more for float images)."""
    per = f" x {itemsize} bytes" if itemsize != 1 else ""
    return (f"malformed image struct: data has {nbytes} bytes, height x width x nChannels = "
            f"{height} x {width} x {nChannels}{per} needs {height * width * nChannels * itemsize}")


class RowErrors:
    """The reasons of one chunk's ``n`` rows (None: the row is fine or null).

    >>> errors = RowErrors(2)
    >>> with errors.attempt(1, "imageLoader"):
    ...     raise ValueError("no such image")
    >>> errors.reasons
    [None, 'imageLoader failed: ValueError: no such image']
    """

    def __init__(self, n):
        self.reasons = [None] * n

    def __len__(self):
        return len(self.reasons)

    @contextmanager
    def attempt(self, i, what):
        """Run the block for row ``i``: a row's failure (:func:`isRowFailure`) in it becomes
        row ``i``'s reason (:func:`reasonOf`) and the code after the block goes on; anything
        else propagates and fails the job."""
        try:
            yield
        except BaseException as e:
            if not isRowFailure(e):
                raise
            self.reasons[i] = reasonOf(e, what)

    def fail(self, i, reason):
        """Mark row ``i`` bad with ``reason`` (a check that raises nothing)."""
        self.reasons[i] = reason

    def failed(self, i):
        return self.reasons[i] is not None

    def toArrow(self):
        """The reasons as an Arrow string array (null for the good and null rows)."""
        return pa.array(self.reasons, pa.string())
