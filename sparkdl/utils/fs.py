"""Reading files by URI on executors: local paths directly, anything else through pyarrow.fs."""
import os
from urllib.parse import unquote, urlparse

__all__ = ["readBytes", "fileSizes", "emptyFiles", "filesystemFor", "sparkWrites"]

_FILESYSTEMS = {}  # (scheme, netloc) -> pyarrow FileSystem, reused across the rows of a worker


def _pathInFilesystem(parsed):
    # pyarrow names HDFS files by path, object stores by "bucket/key".
    if parsed.scheme in ("hdfs", "viewfs"):
        return parsed.path
    return parsed.netloc + parsed.path


#: Hadoop's names of the S3 connector -> the scheme pyarrow knows.
SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3"}


def _remote(parsed, uri):
    """``(pyarrow FileSystem, path in it)`` of a URI that is not local.

    :raises OSError: no file system for the URI's scheme is installed or configured (the
        message names the scheme), so that callers treat it as an unreadable file.
    """
    from pyarrow import fs

    key = (parsed.scheme, parsed.netloc)
    if key not in _FILESYSTEMS:
        scheme = SCHEME_ALIASES.get(parsed.scheme, parsed.scheme)
        try:
            _FILESYSTEMS[key] = fs.FileSystem.from_uri(f"{scheme}://{parsed.netloc}/")[0]
        except Exception as e:  # pyarrow: ArrowInvalid (unknown), ArrowNotImplementedError...
            raise OSError(f"no filesystem for scheme {parsed.scheme}: {uri} "
                          f"({type(e).__name__}: {e})") from None
    return _FILESYSTEMS[key], _pathInFilesystem(parsed)


def filesystemFor(uri):
    """``(pyarrow FileSystem, path in it)`` of a file or directory URI, for reading and
    writing through pyarrow: ``(None, uri)`` for a local path or ``file:`` URI (pyarrow's
    default), else the cached file system of its scheme (Hadoop's ``s3a://`` is S3), which
    takes its settings from the usual variables (``AWS_ENDPOINT_URL``, credentials).

    :raises OSError: no file system for the URI's scheme is installed or configured.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return None, uri
    return _remote(parsed, uri)


#: Schemes whose directories Spark's own writers handle without extra jars.
SPARK_SCHEMES = ("", "file", "hdfs", "viewfs")


def sparkWrites(uri):
    """Whether Spark's bundled writers reach ``uri`` (local and HDFS paths); object stores
    (``s3://``, ``s3a://``, ``gs://``...) need connector jars the bundled Spark lacks, so
    sparkdl writes them through pyarrow (:func:`filesystemFor`)."""
    return urlparse(uri).scheme in SPARK_SCHEMES


def readBytes(uri):
    """Return the bytes of the file at ``uri``: a local path, a ``file:`` URI, or any URI that
    ``pyarrow.fs`` reads (``hdfs://``, ``s3://``, ``gs://``, ...; Hadoop's ``s3a://`` is S3).
    S3 takes its settings from the usual AWS variables (``AWS_ENDPOINT_URL``, credentials).

    :raises OSError: the file cannot be read, or no file system handles its scheme.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        with open(unquote(parsed.path) if parsed.scheme else uri, "rb") as f:
            return f.read()
    filesystem, path = _remote(parsed, uri)
    with filesystem.open_input_stream(path) as f:
        return f.read()


def fileSizes(uris):
    """The size in bytes of each of ``uris`` (URIs as Spark's ``DataFrame.inputFiles`` gives
    them), from file metadata only: a ``stat`` per local file, one listing per directory
    elsewhere; no file is opened. None for a file whose file system cannot be reached from
    this process (its size is not known).

    :return: a list of sizes (int or None), in the order given.
    """
    from pyarrow import fs

    sizes, remote = [None] * len(uris), {}
    for i, uri in enumerate(uris):
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            try:
                sizes[i] = os.stat(unquote(parsed.path)).st_size
            except OSError:
                pass
        else:
            remote.setdefault(uri.rsplit("/", 1)[0], []).append(i)
    for parent, children in remote.items():
        try:
            filesystem, path = _remote(urlparse(parent), parent)
            listed = {info.path: info.size for info in filesystem.get_file_info(
                fs.FileSelector(unquote(path), allow_not_found=True))}
        except Exception:  # an unreachable or unknown file system: nothing is known
            continue
        for i in children:
            sizes[i] = listed.get(unquote(_pathInFilesystem(urlparse(uris[i]))))
    return sizes


def emptyFiles(uris, sizes=None):
    """The zero-byte files among ``uris`` (URIs as Spark's ``DataFrame.inputFiles`` gives
    them), by :func:`fileSizes` (or ``sizes``, its result when already known). Files whose
    file system cannot be reached from this process are left out (they are not known to be
    empty).

    :return: the empty files' URIs, unescaped (``%20`` -> space), in the order given.
    """
    sizes = fileSizes(uris) if sizes is None else sizes
    return [unquote(uri) for uri, size in zip(uris, sizes) if size == 0]
