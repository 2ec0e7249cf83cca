#!/usr/bin/env python3
"""Entrypoint of the air-gapped Kafka stand-in: Tansu behind the official image's listener settings.

apache/kafka is configured with several listeners, e.g.

    KAFKA_LISTENERS=PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:29092
    KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://kafka:9092,HOST://127.0.0.1:9092

so that containers use kafka:9092 and host clients use the published port. Tansu has a single listener
with a single advertised address, so this program:

* runs Tansu on the primary listener (KAFKA_INTER_BROKER_LISTENER_NAME, default PLAINTEXT, else the first
  non-controller listener), advertising that listener's address;
* serves every other non-controller listener with a small Kafka-protocol proxy to Tansu that rewrites the
  broker address in Metadata, FindCoordinator and DescribeCluster responses to that listener's advertised
  address. Every other request and response passes through byte for byte.

So both kafka:9092 (containers) and 127.0.0.1:<published port> (host) work for produce and fetch, as with
the real image. Controller listeners are ignored (Tansu has no KRaft controller). Storage is
memory://tansu/ unless TANSU_STORAGE_ENGINE says otherwise: nothing survives a restart.

Overrides: TANSU_LISTENER_URL and TANSU_ADVERTISED_LISTENER_URL replace the primary listener choice;
KAFKA_STANDIN_BIND (default 0.0.0.0) is the interface the extra listeners bind to.
Any command other than `broker` (the default) is executed as given, like the official image does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys
from dataclasses import dataclass

# Responses that carry broker addresses.
API_METADATA, API_FIND_COORDINATOR, API_DESCRIBE_CLUSTER = 3, 10, 60
ADDRESS_APIS = {API_METADATA, API_FIND_COORDINATOR, API_DESCRIBE_CLUSTER}
UPSTREAM_CONNECT_SECONDS = 30.0


def log(message: str) -> None:
    print(f"[kafka-standin] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_listeners(text: str) -> dict[str, Address]:
    """'NAME://host:port,...' -> {NAME: Address}; an empty host means all interfaces."""
    result: dict[str, Address] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, rest = entry.partition("://")
        host, colon, port = rest.rpartition(":")
        if not sep or not colon or not port.isdigit():
            raise SystemExit(f"kafka stand-in: cannot read listener {entry!r} (expected NAME://HOST:PORT)")
        result[name] = Address(host.strip("[]"), int(port))
    return result


@dataclass(frozen=True)
class Plan:
    tansu_listen: str
    tansu_advertised: str
    proxies: list[tuple[str, int, Address]]  # (listener name, listen port, advertised address)
    primary_advertised: Address


def plan_from_env(env: dict[str, str]) -> Plan:
    listeners = parse_listeners(env.get("KAFKA_LISTENERS", ""))
    advertised = parse_listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    controllers = {n.strip() for n in env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER").split(",")}
    names = [n for n in [*advertised, *listeners] if n not in controllers]
    primary = env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
    if primary not in names:
        primary = names[0] if names else "PLAINTEXT"
    port = (listeners.get(primary) or advertised.get(primary) or Address("", 9092)).port
    primary_adv = advertised.get(primary) or Address(socket.gethostname(), port)
    proxies = []
    for name in dict.fromkeys(names):
        if name == primary or name not in listeners:
            continue
        proxies.append((name, listeners[name].port, advertised.get(name) or Address("127.0.0.1", listeners[name].port)))
    return Plan(
        tansu_listen=env.get("TANSU_LISTENER_URL", f"tcp://0.0.0.0:{port}"),
        tansu_advertised=env.get("TANSU_ADVERTISED_LISTENER_URL", f"tcp://{primary_adv}"),
        proxies=proxies,
        primary_advertised=primary_adv,
    )


# --- Kafka protocol address rewriting --------------------------------------------------------------------------
def uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encodings(address: Address) -> tuple[bytes, bytes]:
    """(classic, flexible) wire encodings of a host string followed by its int32 port."""
    host = address.host.encode()
    port = struct.pack(">i", address.port)
    return struct.pack(">h", len(host)) + host + port, uvarint(len(host) + 1) + host + port


class Rewriter:
    """Replaces one broker address by another inside response payloads."""

    def __init__(self, old: Address, new: Address) -> None:
        self.pairs = list(zip(encodings(old), encodings(new), strict=True))

    def __call__(self, payload: bytes) -> bytes:
        for old, new in self.pairs:
            payload = payload.replace(old, new)
        return payload


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


async def open_upstream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UPSTREAM_CONNECT_SECONDS
    while True:
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def proxy_connection(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream_port: int, rewrite: Rewriter
) -> None:
    pending: dict[int, int] = {}  # correlation id -> api key
    try:
        server_r, server_w = await open_upstream(upstream_port)
    except OSError as exc:
        log(f"proxy: broker on port {upstream_port} unreachable: {exc}")
        client_w.close()
        return

    async def requests() -> None:
        while (frame := await read_frame(client_r)) is not None:
            if len(frame) >= 8:
                api_key, _version, correlation = struct.unpack_from(">hhi", frame)
                pending[correlation] = api_key
            server_w.write(struct.pack(">i", len(frame)) + frame)
            await server_w.drain()

    async def responses() -> None:
        while (frame := await read_frame(server_r)) is not None:
            if len(frame) >= 4:
                correlation = struct.unpack_from(">i", frame)[0]
                if pending.pop(correlation, None) in ADDRESS_APIS:
                    frame = frame[:4] + rewrite(frame[4:])
            client_w.write(struct.pack(">i", len(frame)) + frame)
            await client_w.drain()

    tasks = [asyncio.create_task(requests()), asyncio.create_task(responses())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except ConnectionError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()


async def run_broker(plan: Plan, storage: str, cluster: str, extra: list[str]) -> int:
    upstream_port = int(plan.tansu_listen.rsplit(":", 1)[1])
    command = [
        "tansu", "broker", "--cluster-id", cluster, "--listener-url", plan.tansu_listen,
        "--advertised-listener-url", plan.tansu_advertised, "--storage-engine", storage, *extra,
    ]
    log(f"tansu: listener={plan.tansu_listen} advertised={plan.tansu_advertised} storage={storage}")
    broker = await asyncio.create_subprocess_exec(*command)
    servers = []
    for name, port, advertised in plan.proxies:
        rewrite = Rewriter(plan.primary_advertised, advertised)

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, rw: Rewriter = rewrite) -> None:
            await proxy_connection(r, w, upstream_port, rw)

        bind = os.environ.get("KAFKA_STANDIN_BIND", "0.0.0.0")
        servers.append(await asyncio.start_server(handle, bind, port))
        log(f"listener {name}: {bind}:{port} -> tansu, advertised as {advertised}")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, broker.send_signal, sig)
    code = await broker.wait()
    for server in servers:
        server.close()
    log(f"tansu exited with status {code}")
    return 0 if code in (-signal.SIGTERM, -signal.SIGINT) else code


def main(argv: list[str]) -> int:
    if argv and argv[0] != "broker":
        os.execvp(argv[0], argv)  # noqa: S606 - like the official image: any other command runs as given
    plan = plan_from_env(dict(os.environ))
    storage = os.environ.get("TANSU_STORAGE_ENGINE", "memory://tansu/")
    cluster = os.environ.get("CLUSTER_ID") or os.environ.get("KAFKA_CLUSTER_ID") or "tansu_cluster"
    return asyncio.run(run_broker(plan, storage, cluster, argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
