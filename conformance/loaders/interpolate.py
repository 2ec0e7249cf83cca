"""Compose variable interpolation, as the Compose specification defines it.

Supported forms: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
`${VAR:+replacement}`, `${VAR+replacement}`, nested interpolation inside defaults, and `$$` for a literal `$`.
`interpolate` also reports which variables a string used, so the security comparator can tell a value
that came from the env file from a literal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A `${VAR:?msg}` whose variable is missing, or a malformed expression."""


@dataclass
class Interpolated:
    """The result of interpolating one string."""

    value: str
    variables: list[str] = field(default_factory=list)  # names referenced, in order
    defaults_used: list[str] = field(default_factory=list)  # names whose `:-`/`-` default was used
    placeholders_used: list[str] = field(default_factory=list)  # required names filled by a placeholder


def interpolate(text: str, env: Mapping[str, str], placeholders: Mapping[str, str] | None = None) -> Interpolated:
    """Interpolate `text` with `env`. A required variable (`:?`/`?`) missing from `env` takes its value
    from `placeholders` when given (and is recorded in `placeholders_used`); otherwise it is an error."""
    out = Interpolated("")
    out.value = _expand(text, env, placeholders, out)
    return out


def _expand(text: str, env: Mapping[str, str], placeholders: Mapping[str, str] | None, out: Interpolated) -> str:
    result: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            result.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            result.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2)
            result.append(_braced(text[i + 2 : end], env, placeholders, out))
            i = end + 1
        else:
            match = _NAME.match(text, i + 1)
            if match is None:
                result.append("$")
                i += 1
                continue
            name = match.group(0)
            out.variables.append(name)
            result.append(env.get(name, ""))
            i = match.end()
    return "".join(result)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unterminated ${{...}} in {text!r}")


def _braced(expr: str, env: Mapping[str, str], placeholders: Mapping[str, str] | None, out: Interpolated) -> str:
    match = _NAME.match(expr)
    if match is None:
        raise InterpolationError(f"invalid interpolation ${{{expr}}}")
    name = match.group(0)
    op_text = expr[match.end() :]
    out.variables.append(name)
    is_set = name in env
    value = env.get(name, "")
    if not op_text:
        return value
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if op_text.startswith(op):
            arg = op_text[len(op) :]
            break
    else:
        raise InterpolationError(f"invalid interpolation ${{{expr}}}")
    present = bool(value) if op.startswith(":") else is_set
    if op in (":-", "-"):
        if present:
            return value
        out.defaults_used.append(name)
        return _expand(arg, env, placeholders, out)
    if op in (":+", "+"):
        return _expand(arg, env, placeholders, out) if present else ""
    # required
    if present:
        return value
    if placeholders is not None:
        out.placeholders_used.append(name)
        return placeholders.get(name, f"__{name}__")
    message = _expand(arg, env, placeholders, out) or "is required"
    raise InterpolationError(f"required variable {name} is missing a value: {message}")


def parse_env_file(text: str, where: str) -> dict[str, str]:
    """Parse a dotenv file the way Compose does: KEY=VALUE lines, `export ` prefix, comments, quotes.

    Raises ValueError naming the line for a line that is not KEY=VALUE."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            raise ValueError(f"{where}: line {number} is not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            quote = value[0]
            value = value[1:-1]
            if quote == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"')
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        values[key] = value
    return values
