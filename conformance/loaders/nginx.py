"""A small reader for nginx configuration files: directives as a tree, enough for the parity gate.

    conf = parse_nginx(Path("compose/nginx/nginx.conf").read_text())
    tls = next(s for s in conf.find("server") if s.is_tls)
    tls.get("server_name"), tls.value("client_max_body_size"), tls.proxy_targets()

Comments, quoted strings, blocks and `;`-terminated directives; no includes (the dev front's file is
self-contained on purpose). A syntax error raises NginxSyntaxError with the line number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"""\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[{};]|[^\s{};"'#]+""")


class NginxSyntaxError(ValueError):
    pass


@dataclass
class Directive:
    name: str
    args: tuple[str, ...] = ()
    children: list[Directive] = field(default_factory=list)
    line: int = 0

    def find(self, name: str) -> list[Directive]:
        """Every directive called `name` in this block and the blocks inside it, in file order."""
        out: list[Directive] = []
        for child in self.children:
            if child.name == name:
                out.append(child)
            out.extend(child.find(name))
        return out

    def get(self, name: str) -> tuple[str, ...] | None:
        """Arguments of the first `name` directive directly in this block."""
        return next((c.args for c in self.children if c.name == name), None)

    def value(self, name: str) -> str | None:
        """The effective single value of `name` for this block: its own, else the nearest one inside it."""
        own = self.get(name)
        if own:
            return own[0]
        found = self.find(name)
        return found[0].args[0] if found and found[0].args else None

    @property
    def is_tls(self) -> bool:
        return any("ssl" in d.args for d in self.children if d.name == "listen")

    def listen_ports(self) -> list[int]:
        ports = []
        for d in self.children:
            if d.name == "listen" and d.args:
                port = d.args[0].rsplit(":", 1)[-1]
                if port.isdigit():
                    ports.append(int(port))
        return ports

    def proxy_targets(self) -> list[str]:
        """proxy_pass URLs of this block with `$variables` set by `set` in the same location resolved."""
        out = []
        for location in [self, *self.find("location")]:
            variables = {d.args[0]: d.args[1] for d in location.children if d.name == "set" and len(d.args) == 2}
            for d in location.children:
                if d.name == "proxy_pass" and d.args:
                    out.append(variables.get(d.args[0], d.args[0]))
        return out


def _unquote(tok: str) -> str:
    if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "\"'":
        return tok[1:-1]
    return tok


def parse_nginx(text: str) -> Directive:
    root = Directive("main")
    stack = [root]
    words: list[str] = []
    line = 1
    start = 1
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # an unterminated quote
            raise NginxSyntaxError(f"line {line}: unterminated string")
        tok = match.group(0)
        pos = match.end()
        if tok[0].isspace() or tok[0] == "#":
            line += tok.count("\n")
            continue
        if not words:
            start = line
        if tok == ";":
            if not words:
                raise NginxSyntaxError(f"line {line}: empty directive")
            stack[-1].children.append(Directive(words[0], tuple(words[1:]), line=start))
            words = []
        elif tok == "{":
            if not words:
                raise NginxSyntaxError(f"line {line}: block without a name")
            block = Directive(words[0], tuple(words[1:]), line=start)
            stack[-1].children.append(block)
            stack.append(block)
            words = []
        elif tok == "}":
            if words or len(stack) == 1:
                raise NginxSyntaxError(f"line {line}: unexpected '}}'")
            stack.pop()
        else:
            words.append(_unquote(tok))
        line += tok.count("\n")
    if words or len(stack) != 1:
        raise NginxSyntaxError(f"line {line}: unexpected end of file (missing ';' or '}}')")
    return root


_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")


def size_bytes(value: str) -> int | None:
    """nginx size syntax (32m, 512k, 1g, 1024) in bytes; None when it is not a size."""
    match = _SIZE.match(value.strip())
    if match is None:
        return None
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
