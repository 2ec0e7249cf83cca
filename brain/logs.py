"""Logging set-up: plain text for a terminal, or one JSON object per line for log aggregation.

Every line logged while a request is handled carries its request id (`X-Request-ID` from the client when it is
well formed, else a new one; echoed in the response), so one request's lines can be found across services.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import os
import re
from datetime import UTC, datetime
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def new_request_id(offered: str | None) -> str:
    """Adopt the caller's id when it is safe to log, else make one: 32 random hex digits, as long as a uuid4's
    hex, at a quarter of its cost (this runs on every request). `fullmatch`: the pattern's `$` alone would also
    accept a trailing newline, which forges a log line."""
    return offered if offered and _VALID_ID.fullmatch(offered) else os.urandom(16).hex()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "pid": record.process,  # tells the lines of `--workers N` processes apart
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            doc["request_id"] = rid
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def dict_config(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """The whole logging set-up as a `logging.config.dictConfig` dict, so that it can travel to other processes.

    The CLI hands it to Hypercorn as `Config.logconfig_dict`: Hypercorn applies it in every worker it spawns (they
    start with blank logging). Hypercorn's own loggers get no handler of theirs and propagate to the root's one, so
    each line is written once, by our formatter.
    """
    level = level.upper()
    hypercorn = {"level": level, "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": _RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}, "text": {"format": _TEXT_FORMAT}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": fmt,
                       "filters": ["request_id"]},
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "hypercorn.error": hypercorn,
            "hypercorn.access": hypercorn,
            # httpx logs every request at INFO, which would be one line per background health check.
            "httpx": {"level": max(logging.WARNING, logging.getLevelName(level))},
        },
    }


def configure(level: str = "info", fmt: str = "text") -> None:
    """Set up this process's logging; Hypercorn's workers get the same through `dict_config`."""
    logging.config.dictConfig(dict_config(level, fmt))
