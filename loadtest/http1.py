"""A lean keep-alive HTTP/1.1 client connection for the asyncio load generator: h11 speaks the protocol,
asyncio streams move the bytes.

Why not httpx here: on this machine an ``httpx.AsyncClient`` request costs several times the CPU of a
request on this connection (httpcore looks ``sniffio`` up on every request, a failing import when it is not
installed, plus anyio stream layers). The load generator shares the server's two cores, so every
millisecond it spends is a millisecond the server does not get; ``gan-bench`` reports its CPU either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

READ_SIZE = 1 << 16


class HTTPFailure(Exception):
    """The request got no complete answer (connection refused or lost, protocol error, timeout)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


class Connection:
    """One connection, reopened on demand after an error or a ``Connection: close``."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout_s: float = 60.0,
        tls: ssl.SSLContext | None = None,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http(s)://host[:port], got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
        self.timeout_s = timeout_s
        self.headers = [("Host", parts.netloc), *(headers or {}).items()]
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._protocol = h11.Connection(h11.CLIENT)

    async def request(self, method: str, target: str, body: bytes | None = None) -> Answer:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._exchange(method, target, body)
        except (OSError, EOFError, h11.ProtocolError, TimeoutError) as exc:
            await self.close()
            raise HTTPFailure(f"{type(exc).__name__}: {exc}") from exc

    async def open(self) -> None:
        """Connect now, if not connected (``request`` connects on demand)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
            self._protocol = h11.Connection(h11.CLIENT)

    async def _exchange(self, method: str, target: str, body: bytes | None) -> Answer:
        await self.open()
        assert self._reader is not None and self._writer is not None
        protocol = self._protocol
        headers = [*self.headers, ("Content-Length", str(len(body or b"")))]
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        data = protocol.send(h11.Request(method=method, target=self.prefix + target, headers=headers))
        if body:
            data += protocol.send(h11.Data(data=body))
        data += protocol.send(h11.EndOfMessage())
        self._writer.write(data)

        status, answer_headers, chunks = 0, {}, []
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                protocol.receive_data(await self._reader.read(READ_SIZE))
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise EOFError("server closed the connection mid-answer")
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
        else:  # the server will close (or asked to): start afresh next time
            await self.close()
        return Answer(status, answer_headers, b"".join(chunks))

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
