"""The runner's control connection: JSON objects, one per line, over TCP.

Only JSON crosses it (logs, rank assignments, tracebacks), never pickles, so a stray
connection can at worst be refused; each hello carries the run's random token.
"""
import json
import socket
import threading


class Connection:
    """A socket carrying newline-delimited JSON messages; ``send`` is thread-safe."""

    def __init__(self, sock):
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, address, timeout):
        sock = socket.create_connection(address, timeout=timeout)
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
        """The next message, or ``None`` when the peer closed the connection."""
        try:
            line = self._reader.readline()
        except (OSError, ValueError):
            return None
        if not line:
            return None
        return json.loads(line)

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
