"""Structured logging for every alarm-bridge process, with secrets redacted before output.

One configuration for web, worker, beat and the dev supervisor: JSON lines by default (one event per
line, machine-readable), a console renderer for people. Any key that names a secret (or a person's
contact or medical details, and TrackTik's ``sensitiveInformation``) has its value replaced, and
``token=`` query parameters, bearer credentials and the Alta cookie are cut out of any string, so a
careless log call cannot leak them. A credential in text is masked up to the next whitespace (a
cookie: up to ``;``), whatever printable characters it holds: quotes, ``&`` or ``=`` inside a token
must not end the mask and leave its tail in the log.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from config.settings import Settings

REDACTED = "***"
_SECRET_KEY = re.compile(
    r"(pass(word)?|secret|token|authorization|authentication|cookie|signature|api[_-]?key|credential"
    r"|sensitive|medical|emergency|contact|phone)",
    re.IGNORECASE,
)
_SECRET_IN_TEXT = re.compile(
    r"((?:\b(?:token|access_token|refresh_token|api_key|key|signature|password|secret)=)\S+)"
    r"|((?:Bearer|Basic)\s+)\S+"
    r"|(va=)[^;\s]+",
    re.IGNORECASE,
)


def _redact_text(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        prefix = match.group(1) or match.group(2) or match.group(3) or ""
        if match.group(1):
            prefix = match.group(1).split("=", 1)[0] + "="
        return prefix + REDACTED

    return _SECRET_IN_TEXT.sub(repl, text)


@functools.lru_cache(maxsize=1024)
def _names_a_secret(key: str) -> bool:
    """Whether a key names a secret; a line's keys are the same few every time (bounded cache)."""
    return _SECRET_KEY.search(key) is not None


def _redact_value(key: str, value: Any) -> Any:
    if _names_a_secret(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask every value whose key names a secret, and secrets inside text."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now, not what it was when logging was configured."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging(settings: Settings) -> None:
    """Route structlog and the standard library through one redacting renderer on stderr."""
    level = getattr(logging, settings.log_level)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Not cached: a logger then always follows the current configuration (tests capture it).
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    # No line shows where it was logged from, so the logging module need not walk the stack for it on
    # every record (structlog's logger class walks past its own frames too): the logging HOWTO's own
    # optimisation, a third of a line's CPU with the redaction's cached key test above.
    logging._srcfile = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Celery's own per-task lines ("Task ... received", "... succeeded in ...") repeat what each step
    # logs with its ids (action.claimed, action.succeeded): at INFO they were a tenth of a worker's
    # CPU per step. Their warnings and errors still show.
    for chatty in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
