"""CLI: ``careloop hl7 listen`` (the MLLP listener) and ``careloop hl7 send FILE`` (to test it)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from careloop.flows.inbound.mllp import Listener

DEFAULT_PORT = 2575  # the port IANA registered for HL7 over MLLP


@click.group()
def hl7() -> None:
    """HL7 v2 from the HIS over MLLP."""


def make_listener(max_bytes: int) -> Listener:
    """The listener ``careloop hl7 listen`` runs: each message stored and acknowledged by
    :func:`careloop.flows.inbound.hl7.receive` on the configured database."""
    from careloop.flows.inbound import hl7 as hl7_in

    def handle(message: bytes) -> bytes:
        return hl7_in.receive(message, source="hl7:mllp", max_bytes=max_bytes).ack_bytes()

    def too_large(start: bytes) -> bytes:
        head = hl7_in.read_header(start)
        issue = hl7_in.Issue("MSH", "104", f"message larger than {max_bytes} bytes")
        return hl7_in.build_ack(head, "AR", [issue]).encode("utf-8")

    return Listener(handle, max_bytes=max_bytes, too_large=too_large)


@hl7.command("listen")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed).")
@click.option("--max-bytes", default=1024 * 1024, show_default=True,
              type=click.IntRange(1024, 16 * 1024 * 1024), help="Largest message accepted.")
def listen(host: str, port: int, max_bytes: int) -> None:
    """Receive HL7 v2 messages over MLLP: store, map to events, acknowledge (AA/AE/AR)."""
    listener = make_listener(max_bytes)

    async def run() -> None:
        bound = await listener.start(host, port)
        click.echo(f"listening for HL7 v2 (MLLP) on {host}:{bound}", err=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await listener.close()

    asyncio.run(run())


@hl7.command("send")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
def send_file(file: Path, host: str, port: int) -> None:
    """Send FILE (one HL7 v2 message; LF line ends become CR) and print the ACK in words;
    exit 1 unless it was accepted (AA)."""
    import re

    from careloop.flows.inbound.hl7 import CHARSETS, ack_in_words, read_header
    from careloop.flows.inbound.mllp import send

    raw = re.sub(rb"\r\n|\n", b"\r", file.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    try:
        ack = send(raw.strip(b"\r") + b"\r", host, port)
    except OSError as exc:
        raise click.ClickException(f"{host}:{port}: {exc}") from None
    head = read_header(ack)
    text = ack.decode(CHARSETS.get(re.sub(r"[^A-Z0-9]", "", head.charset.upper()), "utf-8"),
                      errors="replace")
    lines = ack_in_words(text)
    for line in lines:
        click.echo(line)
    if not lines[0].startswith("AA "):
        raise SystemExit(1)
