"""Structured logging: readable lines in development, JSON lines in production."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from mercurio.config import Settings


def configure_logging(settings: Settings) -> None:
    """Route structlog and the standard library's loggers to one stream and one renderer.

    Our own events (one per request) are rendered by structlog and written straight to the
    stream: through the standard library's loggers, handlers and formatter each line cost
    ~100 µs of CPU, as much as the rest of a publish. Other libraries' records (uvicorn,
    alembic) still come through `logging`, rendered alike.
    """
    level = getattr(logging, settings.log_level.upper())
    # Tracebacks are printed plain: a rich traceback shows local variables, and a local
    # variable may be a token.
    renderers: list[structlog.types.Processor] = (
        [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_line),
        ]
        if settings.log_as_json
        else [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        ]
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler()
    structlog.configure(
        processors=[*shared, *renderers],
        logger_factory=LineLoggerFactory(handler),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *renderers,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # The access log would print query strings, and with them stream tickets.
    logging.getLogger("uvicorn.access").disabled = True


class LineLogger:
    """Writes structlog's rendered lines to the handler's stream, one write each.

    Under the handler's own lock, so a line never interleaves with a standard library record
    written to the same stream from another thread.
    """

    __slots__ = ("handler", "name")

    def __init__(self, name: str, handler: logging.StreamHandler[Any]) -> None:
        self.name = name  # read by add_logger_name
        self.handler = handler

    def msg(self, line: str) -> None:
        handler = self.handler
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(line + "\n")
            handler.stream.flush()

    debug = info = warning = warn = error = critical = fatal = exception = msg


class LineLoggerFactory:
    """structlog's logger factory: a LineLogger named as `structlog.get_logger(name)` asked."""

    def __init__(self, handler: logging.StreamHandler[Any]) -> None:
        self.handler = handler

    def __call__(self, *args: Any) -> LineLogger:
        return LineLogger(str(args[0]) if args else "", self.handler)


def _json_line(value: Any, default: Callable[[Any], Any], **_: Any) -> str:
    """orjson where it can (a few µs a line), the standard library where it cannot."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, default=default)  # e.g. an integer wider than 64 bits
