"""The probe that runs INSIDE a workload's container, with the image's own python3 (stdlib only).

It is sent as the program text of `python3 -c` (docker exec / pod exec), with one JSON argument: a list of
probes. It runs them concurrently and prints one JSON list of results, in the same order, on stdout.

    {"op": "resolve", "name": "sb_redis"}
        -> {"ok": true, "addresses": ["172.18.0.3"]} | {"ok": false, "error": "..."}
    {"op": "tcp", "host": "sb_redis", "port": 6379, "timeout": 1.0, "attempts": 2}
        -> {"ok": true, "status": "connected", "address": "172.18.0.3"}
           status is one of connected | refused | timeout | unresolved | error
    {"op": "http", "url": "http://127.0.0.1:9696/health", "method": "GET", "headers": {}, "timeout": 3.0}
        -> {"ok": true, "status": 200, "headers": {...}, "body": "..."} | {"ok": false, "error": "..."}

Keep it compatible with old interpreters (Python 3.6+): it runs in whatever image the workload uses.
"""

import json
import socket
import sys
import threading
import time

try:  # Python 3 only; urllib is in every CPython build
    import urllib.error
    import urllib.request
except ImportError:  # pragma: no cover - a broken interpreter
    urllib = None


def resolve(probe):
    try:
        infos = socket.getaddrinfo(probe["name"], None, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return {"ok": False, "error": "cannot resolve {}: {}".format(probe["name"], exc)}
    addresses = sorted({info[4][0] for info in infos})
    return {"ok": True, "addresses": addresses}


def _connect_once(host, port, timeout):
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return {"ok": False, "status": "unresolved", "error": str(exc)}
    last = {"ok": False, "status": "error", "error": "no address"}
    for family, kind, proto, _canon, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return {"ok": True, "status": "connected", "address": address[0]}
        except ConnectionRefusedError as exc:
            last = {"ok": False, "status": "refused", "address": address[0], "error": str(exc)}
        except TimeoutError:
            last = {"ok": False, "status": "timeout", "address": address[0],
                    "error": f"no answer within {timeout}s"}
        except OSError as exc:
            last = {"ok": False, "status": "error", "address": address[0], "error": str(exc)}
        finally:
            sock.close()
    return last


def tcp(probe):
    attempts = max(1, int(probe.get("attempts", 2)))
    result = {}
    for attempt in range(attempts):
        result = _connect_once(probe["host"], int(probe["port"]), float(probe.get("timeout", 1.0)))
        if result["ok"] or result["status"] == "unresolved":
            break
        if attempt + 1 < attempts:
            time.sleep(0.1)
    result["attempts"] = attempt + 1
    return result


def http(probe):
    data = probe.get("body")
    request = urllib.request.Request(
        probe["url"],
        data=data.encode() if data is not None else None,
        headers=probe.get("headers") or {},
        method=probe.get("method", "GET"),
    )
    try:
        response = urllib.request.urlopen(request, timeout=float(probe.get("timeout", 3.0)))
        status, headers, body = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, dict(exc.headers), exc.read()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "status": status, "headers": headers, "body": body.decode("utf-8", "replace")}


OPS = {"resolve": resolve, "tcp": tcp, "http": http}


def run(probe, results, index):
    try:
        results[index] = OPS[probe["op"]](probe)
    except Exception as exc:
        results[index] = {"ok": False, "error": f"probe failed: {type(exc).__name__}: {exc}"}


def main(argv):
    probes = json.loads(argv[1])
    results = [None] * len(probes)
    threads = [threading.Thread(target=run, args=(p, results, i)) for i, p in enumerate(probes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sys.stdout.write(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
