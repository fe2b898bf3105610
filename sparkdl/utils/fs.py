"""Reading files by URI on executors: local paths directly, anything else through pyarrow.fs."""
from urllib.parse import unquote, urlparse

__all__ = ["readBytes"]

_FILESYSTEMS = {}  # (scheme, netloc) -> pyarrow FileSystem, reused across the rows of a worker


def _pathInFilesystem(parsed):
    # pyarrow names HDFS files by path, object stores by "bucket/key".
    if parsed.scheme in ("hdfs", "viewfs"):
        return parsed.path
    return parsed.netloc + parsed.path


def readBytes(uri):
    """Return the bytes of the file at ``uri``: a local path, a ``file:`` URI, or any URI that
    ``pyarrow.fs`` reads (``hdfs://``, ``s3://``, ``gs://``, ...)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        with open(unquote(parsed.path) if parsed.scheme else uri, "rb") as f:
            return f.read()
    from pyarrow import fs

    key = (parsed.scheme, parsed.netloc)
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = fs.FileSystem.from_uri(uri)[0]
    with _FILESYSTEMS[key].open_input_stream(_pathInFilesystem(parsed)) as f:
        return f.read()
