"""A websocket client that writes frames by hand, so that several frames can go out in one TCP write
(and so reach the server in one read), which no ordinary client library does on purpose."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct

__all__ = ["RawWebSocket"]


def _frame(text: str) -> bytes:
    """One masked text frame (RFC 6455 §5.2), as a client must send it."""
    payload = text.encode("utf-8", "surrogatepass")
    head = bytes([0x81])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str, headers: dict) -> "RawWebSocket":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                 *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = await reader.readline()
        assert b" 101 " in status, status
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    async def send_together(self, *texts: str) -> None:
        """All ``texts`` as frames in a single write."""
        self.writer.write(b"".join(_frame(t) for t in texts))
        await self.writer.drain()

    async def recv(self, timeout: float = 60) -> dict:
        """The next text frame from the server, as JSON (control frames are skipped)."""
        while True:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError(f"the server closed the websocket: {payload!r}")
            if opcode == 0x1:
                return json.loads(payload)

    def close(self) -> None:
        self.writer.close()
