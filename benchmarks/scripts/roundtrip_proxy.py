"""Count a PostgreSQL client's round trips exactly: a TCP proxy that reads the wire protocol.

A round trip (turn-around) is the client sending one or more messages that want an answer,
then the server answering before the client sends again. It is counted from the order of
the messages, not from timing, so the count is the same on a fast or a loaded machine; the
time a command takes on a remote database is about its round trips times the latency.

The proxy parses the startup (SSLRequest, GSSENCRequest, StartupMessage, untyped) and then the
typed messages both ways. A client message that wants no answer (Terminate, CopyData) starts
no round trip; a server message nobody asked for (ParameterStatus, NoticeResponse while the
client is silent) ends none. Once TLS starts (after 'S' to an SSLRequest, or at once with
libpq 17's sslnegotiation=direct) the bytes are opaque: a round trip is then server bytes
after client bytes, which also counts the TLS handshake's own turn-arounds.

A client that pipelines (sends its next batch without waiting) is counted right only if its
next batch reaches the proxy before the server's answer to the first: --delay-ms holds the
client's bytes that long before passing them on, as a network would, so a pipelined batch
is never counted as a turn-around of its own. It also makes the proxy a latency simulator.

Usage, standalone (Python 3.10+, standard library only):

    # count one command: {port} in its arguments becomes the proxy's port
    python roundtrip_proxy.py --upstream 127.0.0.1:5432 -- \\
        psql "postgresql://user:pw@127.0.0.1:{port}/db" -c "select 1"

    # or run as a server until SIGINT/SIGTERM, rewriting the counts after every connection
    python roundtrip_proxy.py --upstream 127.0.0.1:5432 --listen 6543 --out counts.json

The counts are JSON: {"connections": 1, "round_trips": 5, "per_connection": [{"round_trips":
5, "tls": false, "client_messages": {...}, "statements": [...]}]}; -v also logs every message
to stderr. In Python: `with RoundTripProxy(upstream_port) as proxy: ...; proxy.counts()`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
TLS_HANDSHAKE = 0x16  # a TLS record's first byte: libpq 17's sslnegotiation=direct
NO_ANSWER = {b"X", b"d"}  # Terminate, CopyData: the client waits for nothing
STATEMENTS = {b"Q", b"P"}  # Query, Parse: the text of what the client asked

CLIENT_NAMES = {
    b"Q": "Query", b"P": "Parse", b"B": "Bind", b"E": "Execute", b"D": "Describe",
    b"S": "Sync", b"H": "Flush", b"C": "Close", b"X": "Terminate", b"p": "Password",
    b"d": "CopyData", b"c": "CopyDone", b"f": "CopyFail", b"F": "FunctionCall",
}  # fmt: skip


@dataclass
class Connection:
    """One client connection's counts."""

    round_trips: int = 0
    tls: bool = False
    client_messages: Counter[str] = field(default_factory=Counter)
    statements: list[str] = field(default_factory=list)
    # the client sent something that wants an answer and the server has not answered yet
    waiting: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "round_trips": self.round_trips,
            "tls": self.tls,
            "client_messages": dict(self.client_messages),
            "statements": self.statements,
        }


class _Parser:
    """Splits one direction's bytes into protocol messages and updates the connection."""

    def __init__(self, conn: Connection, from_client: bool, verbose: bool) -> None:
        self.conn = conn
        self.from_client = from_client
        self.verbose = verbose
        self.buffer = b""
        self.untyped = from_client  # the client's first messages have no type byte
        self.peer: _Parser | None = None
        self.expect_answer_byte = False  # the server answers SSL/GSSENC with one bare byte

    def feed(self, data: bytes) -> None:
        if self.conn.tls:
            self._opaque(data)
            return
        self.buffer += data
        while not self.conn.tls:
            message = self._next()
            if message is None:
                return
        if self.buffer:  # the rest of this chunk is already TLS
            rest, self.buffer = self.buffer, b""
            self._opaque(rest)

    def _opaque(self, data: bytes) -> None:
        if data:
            self._event(b"tls", b"", wants_answer=True)

    def _next(self) -> bytes | None:
        buf = self.buffer
        if self.from_client and self.untyped:
            if buf[:1] == bytes([TLS_HANDSHAKE]):
                self._start_tls()
                return None
            if len(buf) < 8:
                return None
            (length,) = struct.unpack("!I", buf[:4])
            if len(buf) < length:
                return None
            (code,) = struct.unpack("!I", buf[4:8])
            self.buffer = buf[length:]
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                assert self.peer is not None
                self.peer.expect_answer_byte = True
                self._event(b"SSLRequest" if code == SSL_REQUEST else b"GSSENCRequest", b"")
            elif code == CANCEL_REQUEST:
                self._event(b"CancelRequest", b"", wants_answer=False)
            else:
                self.untyped = False
                self._event(b"StartupMessage", b"")
            return b"untyped"
        if not self.from_client and self.expect_answer_byte:
            if not buf:
                return None
            self.expect_answer_byte = False
            self.buffer = buf[1:]
            self._event(buf[:1], b"")
            if buf[:1] in (b"S", b"G"):
                self._start_tls()
            return buf[:1]
        if len(buf) < 5:
            return None
        kind = buf[:1]
        (length,) = struct.unpack("!I", buf[1:5])
        if len(buf) < 1 + length:
            return None
        self.buffer = buf[1 + length :]
        self._event(kind, buf[5 : 1 + length], wants_answer=kind not in NO_ANSWER)
        return kind

    def _start_tls(self) -> None:
        self.conn.tls = True
        self.conn.waiting = False
        if self.peer is not None and self.peer.buffer:
            rest, self.peer.buffer = self.peer.buffer, b""
            self.peer._opaque(rest)

    def _event(self, kind: bytes, body: bytes, wants_answer: bool = True) -> None:
        conn = self.conn
        if self.from_client:
            name = CLIENT_NAMES.get(kind, kind.decode("latin-1"))
            conn.client_messages[name] += 1
            if kind in STATEMENTS:
                text = body[body.index(b"\0") + 1 :] if kind == b"P" else body
                conn.statements.append(text.split(b"\0", 1)[0].decode("utf-8", "replace"))
            if wants_answer:
                conn.waiting = True
        elif conn.waiting:
            conn.round_trips += 1
            conn.waiting = False
        if self.verbose:
            side = "C" if self.from_client else "S"
            at = f"{time.monotonic() % 1000:8.3f}"
            preview = body[:100].decode("utf-8", "replace").replace("\0", " ")
            print(
                f"{at} [{conn.round_trips}] {side} {kind.decode('latin-1')} {preview}",
                file=sys.stderr,
            )


class Counts:
    """Every connection through the proxy since it started (or was reset)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: list[Connection] = []
        self.open = 0

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "connections": len(self.connections),
                "round_trips": sum(c.round_trips for c in self.connections),
                "per_connection": [c.as_dict() for c in self.connections],
            }


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    parser: _Parser,
    delay: float,
) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(forward())
    try:
        while data := await reader.read(65536):
            parser.feed(data)  # counted as it arrives, before any delay
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    finally:
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(ConnectionError, OSError):
            await sender
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _handle(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: tuple[str, int],
    counts: Counts,
    delay: float,
    verbose: bool,
    on_close: Any,
) -> None:
    conn = Connection()
    with counts.lock:
        counts.connections.append(conn)
        counts.open += 1
    try:
        server_reader, server_writer = await asyncio.open_connection(*upstream)
        to_server = _Parser(conn, from_client=True, verbose=verbose)
        to_client = _Parser(conn, from_client=False, verbose=verbose)
        to_server.peer, to_client.peer = to_client, to_server
        await asyncio.gather(
            _pipe(client_reader, server_writer, to_server, delay),
            _pipe(server_reader, client_writer, to_client, 0.0),
        )
    except (ConnectionError, OSError) as exc:
        print(f"roundtrip_proxy: {exc}", file=sys.stderr)
        client_writer.close()
    finally:
        with counts.lock:
            counts.open -= 1
        on_close()


class RoundTripProxy:
    """The proxy on a thread of its own, for use from Python (benchmarks, tests).

    with RoundTripProxy(5432) as proxy:  # listens on proxy.port
        ...  # connect to 127.0.0.1:proxy.port
        print(proxy.counts())  # waits for every connection to close first
    """

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        listen_port: int = 0,
        delay_ms: float = 0.0,
        verbose: bool = False,
        out: Path | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen_port = listen_port
        self.delay = delay_ms / 1000
        self.verbose = verbose
        self.out = out
        self.state = Counts()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> RoundTripProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if not self.port:
            raise OSError(f"roundtrip_proxy: could not listen on port {self.listen_port}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        def closed() -> None:
            if self.out is not None:
                write_counts(self.out, self.state.as_dict())

        async def serve() -> None:
            self._server = await asyncio.start_server(
                lambda r, w: _handle(
                    r, w, self.upstream, self.state, self.delay, self.verbose, closed
                ),
                "127.0.0.1",
                self.listen_port,
            )
            self.port = self._server.sockets[0].getsockname()[1]

        try:
            self._loop.run_until_complete(serve())
        finally:
            self._ready.set()
        self._loop.run_forever()

    def reset(self) -> None:
        """Forget the connections so far (call it when none is open)."""
        with self.state.lock:
            self.state.connections = []

    def counts(self, timeout: float = 10.0) -> dict[str, Any]:
        """The counts, once every connection has closed (or timeout seconds have passed)."""
        deadline = time.monotonic() + timeout
        while self.state.open and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.state.as_dict()

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def write_counts(out: Path | None, counts: dict[str, Any]) -> None:
    text = json.dumps(counts, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, out)  # a reader never sees half a file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Count a PostgreSQL client's round trips through a proxy.",
        epilog="After --, a command to run; {port} in its arguments becomes the proxy's port.",
    )
    parser.add_argument("--upstream", required=True, help="the server, host:port")
    parser.add_argument("--listen", type=int, default=0, help="port to listen on (default: any)")
    parser.add_argument("--out", type=Path, help="write the counts here (default: stdout)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="hold the client's bytes")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every message")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--upstream must be host:port, not {args.upstream!r}")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        out = None if command else args.out  # with a command, written once it has finished
        proxy = RoundTripProxy(int(port), host, args.listen, args.delay_ms, args.verbose, out)
        proxy.start()
    except OSError as exc:
        print(exc, file=sys.stderr)
        return 2
    if command:
        env = {**os.environ, "ROUNDTRIP_PROXY_PORT": str(proxy.port)}
        command = [part.replace("{port}", str(proxy.port)) for part in command]
        returncode = subprocess.run(command, env=env, check=False).returncode
        write_counts(args.out, proxy.counts())
        proxy.stop()
        return returncode
    print(f"roundtrip_proxy: listening on 127.0.0.1:{proxy.port}", file=sys.stderr, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):  # a timeout, so that signals are handled promptly
        pass
    write_counts(args.out, proxy.counts(timeout=1.0))
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
