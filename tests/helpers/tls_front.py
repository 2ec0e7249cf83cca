"""A TLS front for a plaintext Kafka-protocol broker: `python -m tests.helpers.tls_front --port P --upstream H:P ...`.

Tansu 0.6.0 cannot serve TLS itself (see tests/helpers/secure_kafka.py), so the tests put this in front of it: OpenSSL
(Python's ssl module) terminates TLS on 127.0.0.1:P, optionally requiring a client certificate signed by
`--client-ca`, and every byte passes through unchanged to the broker. The broker advertises this front's address,
so clients reach the broker only through TLS. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass  # the other side went away: the connection ends, as it would at a real broker
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def _serve(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(args.client_ca)
    host, _, port = args.upstream.rpartition(":")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, ssl=context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        print(f"tls front on 127.0.0.1:{args.port} -> {args.upstream}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of the plaintext broker")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca", help="require a client certificate signed by this CA (mTLS)")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
