"""conformance/loaders/nginx.py: the directive tree the parity gate reads the dev TLS front from."""

from __future__ import annotations

import pytest

from conformance.loaders.nginx import NginxSyntaxError, parse_nginx, size_bytes

CONF = """
# comment with ; and { braces }
http {
    client_max_body_size 8m;
    server {
        listen 443 ssl http2;
        server_name a.example "b.example";
        location / { set $up http://api:9696; proxy_pass $up; }
        location /raw { proxy_pass http://raw:80; }
    }
    server { listen 127.0.0.1:8080; return 200 "ok; fine\\n"; }
}
"""


def test_tree_and_lookups() -> None:
    root = parse_nginx(CONF)
    servers = root.find("server")
    assert [s.is_tls for s in servers] == [True, False]
    tls = servers[0]
    assert tls.get("server_name") == ("a.example", "b.example")
    assert tls.proxy_targets() == ["http://api:9696", "http://raw:80"]
    assert tls.listen_ports() == [443] and servers[1].listen_ports() == [8080]
    assert tls.get("client_max_body_size") is None  # set on http, not on the server
    assert servers[1].get("return") == ("200", "ok; fine\\n")
    assert tls.children[0].line == 6


@pytest.mark.parametrize(
    "text, message",
    [
        ("http { server { listen 80; }", "unexpected end of file"),
        ("listen 80", "unexpected end of file"),
        ("}", "unexpected '}'"),
        ("{ listen 80; }", "block without a name"),
        ("events { ; }", "empty directive"),
        ('server_name "open;', "unterminated string"),
    ],
)
def test_syntax_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(NginxSyntaxError, match=message):
        parse_nginx(text)


def test_sizes() -> None:
    assert size_bytes("32m") == size_bytes("32M") == 32 * 1024 * 1024
    assert size_bytes("512k") == 512 * 1024 and size_bytes("1g") == 1024**3 and size_bytes("100") == 100
    assert size_bytes("32mb") is None and size_bytes("") is None
