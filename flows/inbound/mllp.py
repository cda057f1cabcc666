"""MLLP (Minimal Lower Layer Protocol): ``0x0B message 0x1C 0x0D`` over TCP.

:func:`serve` is an asyncio server for many connections; each message is handed to a handler in
a worker thread (sync SQLAlchemy) and its ACK written back on the same connection, in order.
Bytes outside a frame are dropped (counted in the log, never echoed); a frame larger than
``max_bytes`` is answered AR (``104 Value too long``) and skipped up to its end; a connection
idle longer than ``idle_seconds`` is closed. Nothing a client sends stops the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("careloop.flows.hl7")

START, END = b"\x0b", b"\x1c\x0d"
Handler = Callable[[bytes], bytes]


def frame(message: bytes) -> bytes:
    return START + message + END


class Listener:
    """The MLLP server; ``handler(message) -> ack`` runs in a thread pool."""

    def __init__(self, handler: Handler, *, max_bytes: int, too_large: Handler,
                 idle_seconds: float = 300.0, workers: int = 4) -> None:
        self.handler, self.too_large = handler, too_large
        self.max_bytes, self.idle = max_bytes, idle_seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hl7")
        self.server: asyncio.Server | None = None
        self.clients: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (``port=0`` picks a free one)."""
        self.server = await asyncio.start_server(self._client, host, port)
        sock: socket.socket = self.server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        """Stop accepting, end the open connections, wait for the workers."""
        if self.server is not None:
            self.server.close()
        for task in list(self.clients):
            task.cancel()
        await asyncio.gather(*self.clients, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
        self.pool.shutdown(wait=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.clients.add(task)
            task.add_done_callback(self.clients.discard)
        loop = asyncio.get_running_loop()
        buffer = b""
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), self.idle)
                if not chunk:
                    break
                buffer += chunk
                buffer = await self._frames(buffer, writer, loop)
        except (TimeoutError, ConnectionError):
            pass
        except Exception:  # one client's failure never stops the listener
            log.exception("hl7 listener: connection failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _frames(self, buffer: bytes, writer: asyncio.StreamWriter,
                      loop: asyncio.AbstractEventLoop) -> bytes:
        while True:
            start = buffer.find(START)
            if start < 0:
                if buffer.strip():
                    log.warning("hl7 listener: %d bytes outside an MLLP frame dropped",
                                len(buffer))
                return b""
            if start > 0 and buffer[:start].strip():
                log.warning("hl7 listener: %d bytes before an MLLP frame dropped", start)
            buffer = buffer[start:]
            end = buffer.find(END)
            if end < 0:
                if len(buffer) > self.max_bytes:  # answer now, skip the rest of this frame
                    ack = await loop.run_in_executor(self.pool, self.too_large, buffer[1:4096])
                    writer.write(frame(ack))
                    await writer.drain()
                    return await self._skip(buffer)
                return buffer
            message, buffer = buffer[1:end], buffer[end + len(END):]
            if START in message:  # a frame that never ended, followed by a new one
                log.warning("hl7 listener: an unterminated frame dropped")
                message = message[message.rfind(START) + 1:]
            ack = await loop.run_in_executor(self.pool, self.handler, message)
            writer.write(frame(ack))
            await writer.drain()

    async def _skip(self, buffer: bytes) -> bytes:
        # Only the part after the frame's end is kept; the caller reads on.
        end = buffer.find(END)
        return b"" if end < 0 else buffer[end + len(END):]


def send(message: bytes, host: str, port: int, *, timeout: float = 30.0) -> bytes:
    """Send one framed message and return the ACK (``careloop hl7 send``)."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(frame(message))
        data = b""
        while END not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    start = data.find(START)
    end = data.find(END)
    if start < 0 or end < 0:
        raise ConnectionError("no MLLP-framed answer from the listener")
    return data[start + 1:end]
