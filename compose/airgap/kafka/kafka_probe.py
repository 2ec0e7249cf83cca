#!/usr/bin/env python3
"""Kafka-protocol probe standing in for the JVM tools of the official Kafka image.

Installed as /opt/kafka/bin/kafka-topics.sh and /opt/kafka/bin/kafka-broker-api-versions.sh in the
air-gapped Kafka stand-in, so compose healthchecks written for apache/kafka work unchanged:

  kafka-topics.sh --bootstrap-server HOST:PORT --list        Metadata request; prints one topic per line
  kafka-broker-api-versions.sh --bootstrap-server HOST:PORT  ApiVersions request; prints the API ranges

Exit status 0 when the broker answered without error, 1 when it did not, 2 on bad arguments.
Standard library only (the stand-in image has python3 and nothing else).
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"kafka-probe"


class ProbeError(Exception):
    """The broker could not be reached or sent something unexpected."""


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", "replace")


def request(address: tuple[str, int], api_key: int, api_version: int, body: bytes, timeout: float) -> Reader:
    header = struct.pack(">hhih", api_key, api_version, 1, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(payload)) + payload)
            size = struct.unpack(">i", recv_exact(sock, 4))[0]
            reader = Reader(recv_exact(sock, size))
    except OSError as exc:
        raise ProbeError(f"cannot talk to {address[0]}:{address[1]}: {exc}") from exc
    if reader.take(">i") != 1:
        raise ProbeError("response correlation id does not match the request")
    return reader


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ProbeError("broker closed the connection mid-response")
        chunks.extend(chunk)
    return bytes(chunks)


def api_versions(address: tuple[str, int], timeout: float) -> list[tuple[int, int, int]]:
    reader = request(address, API_VERSIONS, 0, b"", timeout)
    error = reader.take(">h")
    if error != 0:
        raise ProbeError(f"ApiVersions answered with error code {error}")
    return [(reader.take(">h"), reader.take(">h"), reader.take(">h")) for _ in range(reader.take(">i"))]


def topic_names(address: tuple[str, int], timeout: float) -> list[str]:
    reader = request(address, API_METADATA, 1, struct.pack(">i", -1), timeout)  # -1: all topics
    for _ in range(reader.take(">i")):  # brokers: node_id, host, port, rack
        reader.take(">i")
        reader.string()
        reader.take(">i")
        reader.string()
    reader.take(">i")  # controller id
    names = []
    for _ in range(reader.take(">i")):
        reader.take(">h")  # topic error code
        name = reader.string()
        reader.take(">b")  # is_internal
        for _ in range(reader.take(">i")):  # partitions
            reader.take(">h")
            reader.take(">i")
            reader.take(">i")
            for _ in range(2):  # replicas, isr
                for _ in range(reader.take(">i")):
                    reader.take(">i")
        if name is not None:
            names.append(name)
    return names


def parse_address(text: str) -> tuple[str, int]:
    first = text.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    tool = os.path.basename(sys.argv[0])
    parser = argparse.ArgumentParser(
        prog=tool, description=__doc__.split("\n\n")[0] if __doc__ else None, allow_abbrev=False
    )
    parser.add_argument("--bootstrap-server", required=True, type=parse_address, metavar="HOST:PORT")
    parser.add_argument("--list", action="store_true", help="list topic names (kafka-topics.sh)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    args, ignored = parser.parse_known_args(argv)
    topics_tool = tool.startswith("kafka-topics") or args.list
    try:
        if topics_tool:
            if not args.list:
                print(f"{tool}: this stand-in only supports --list", file=sys.stderr)
                return 2
            for name in sorted(topic_names(args.bootstrap_server, args.timeout)):
                print(name)
        else:
            host, port = args.bootstrap_server
            print(f"{host}:{port} -> (")
            for key, low, high in api_versions(args.bootstrap_server, args.timeout):
                print(f"\tapi {key}: {low} to {high},")
            print(")")
    except (ProbeError, struct.error) as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return 1
    if ignored:
        print(f"{tool}: ignored options not supported by the stand-in: {' '.join(ignored)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
