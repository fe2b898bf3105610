"""The runner's control connection: a fixed-size hello carrying the run's token, then JSON
objects, one per line, over TCP.

A peer must first send exactly :data:`HELLO_SIZE` bytes (a magic string and the run's random
token) within a few seconds; the driver reads nothing more from a peer that does not. Only
JSON crosses the connection after that (logs, rank assignments, tracebacks), never pickles,
and every line is bounded, so a stray or hostile connection can at worst be dropped.
"""
import hmac
import json
import secrets
import socket
import threading
import time

TOKEN_BYTES = 16
_MAGIC = b"SPARKDL-HVD/1 "
#: Bytes of the hello: the magic string, the token as hex, a newline.
HELLO_SIZE = len(_MAGIC) + 2 * TOKEN_BYTES + 1
#: Longest JSON line accepted from an authenticated peer (a traceback, an output line).
MAX_LINE = 16 << 20


def new_token():
    """A fresh random token for one run (never logged, never put in job names)."""
    return secrets.token_hex(TOKEN_BYTES)


def _hello(token):
    data = _MAGIC + token.encode("ascii") + b"\n"
    if len(data) != HELLO_SIZE:
        raise ValueError("a run token is 32 hex characters")
    return data


def authenticate(sock, token, timeout):
    """Read the peer's hello (exactly :data:`HELLO_SIZE` bytes, within ``timeout`` seconds in
    all) and say whether it carries ``token``. Reads nothing beyond the hello."""
    expected = _hello(token)
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while len(data) < HELLO_SIZE:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sock.settimeout(remaining)
            chunk = sock.recv(HELLO_SIZE - len(data))
            if not chunk:
                return False
            data += chunk
        sock.settimeout(None)
    except OSError:  # timed out, reset, or closed by the service shutting down
        return False
    return hmac.compare_digest(data, expected)


def close_quietly(sock):
    """Shut down and close ``sock`` (shutting down also wakes a thread blocked reading it)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Connection:
    """A socket carrying newline-delimited JSON objects; ``send`` is thread-safe."""

    def __init__(self, sock):
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, address, timeout, token):
        """Connect to the driver at ``address`` and send the hello for ``token``."""
        sock = socket.create_connection(address, timeout=timeout)
        try:
            sock.sendall(_hello(token))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def send(self, message):
        data = (json.dumps(message) + "\n").encode("utf-8")
        with self._lock:
            self.sock.sendall(data)

    def try_send(self, message):
        try:
            self.send(message)
            return True
        except OSError:
            return False

    def recv(self):
        """The next message (a dict), or ``None`` when the peer closed the connection or broke
        the protocol (a line over :data:`MAX_LINE` bytes, not JSON, not an object); the
        connection is closed then."""
        try:
            line = self._reader.readline(MAX_LINE + 1)
        except (OSError, ValueError):
            line = b""
        message = None
        if line.endswith(b"\n"):
            try:
                message = json.loads(line)
            except ValueError:
                message = None
        if not isinstance(message, dict):
            self.close()
            return None
        return message

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        except OSError:
            pass
        try:
            self._reader.close()  # the socket's file descriptor stays open until this is closed
        except (OSError, ValueError):
            pass
        close_quietly(self.sock)
