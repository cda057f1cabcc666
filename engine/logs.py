"""One log pipeline, one redaction step: no personal data and no link tokens in any log line.

    stdlib record (any logger: careloop, uvicorn, uvicorn.access, sqlalchemy, apscheduler)
        │ record factory: message, string arguments, exception text, stack ──▶ redact()
        ▼
    structlog ProcessorFormatter (the one handler on the root logger)
        │ level, logger, wall-clock time, request id ──▶ redact() ──▶ key=value or JSON line
    structlog-native loggers (``structlog.get_logger``) pass the same processors.

:func:`redact` replaces mobile numbers in any writing (``13812345678``, ``138-1234-5678``,
``+86 138 1234 5678``), resident ID numbers, e-mail addresses, the secret part of patient links
(``/f/``, ``/d/``, ``/r/``, ``/q/``, ``/e/``, ``/s/{token}``), the parameters SQLAlchemy and
the drivers print with a failed statement, and the personal values of the patients in context
(their names and birth dates, added with :func:`hide` when request handling or ingest loads a
patient).

    >>> redact("call 138-1234-5678 about 110101199003071234, link /f/AbCdEfGh12345678")
    'call [phone] about [id-number], link /f/[token]'

:func:`configure` is called once per process by the web app and the command line (idempotent).
``CARELOOP_LOG_FORMAT=json`` writes JSON lines; the default is ``key=value`` text.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

from careloop.engine.clock import wall_clock_utc
from careloop.engine.privacy import ID_NUMBER_PATTERN, PHONE_PATTERN

_TOKEN = re.compile(r"(/[fdrqes]/)[A-Za-z0-9_\-]{8,}")
_SQL_PARAMETERS = re.compile(r"\[parameters: .*?\](?=\s*(?:\n|\(Background|$))", re.S)
_KEY_DETAIL = re.compile(r"(Key \([^)]*\)=\()[^)]*(\))")
_PATTERNS = (
    (ID_NUMBER_PATTERN, "[id-number]"),
    (PHONE_PATTERN, "[phone]"),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "[email]"),
)

# The personal values (names, birth dates) of the patients loaded in this context. The set is
# mutable and shared by the copies of the context a request's thread pool makes, so a value
# hidden in a route is hidden in the exception handler's and the access log's lines too.
_HIDDEN: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "careloop_log_hidden", default=None)


MAX_HIDDEN = 2000  # a request listing many patients hides the first ones; patterns still apply


def hide(*values: object) -> None:
    """Redact these values (a patient's name, birth date, MRN) from every log line of the current
    request or :func:`personal_scope` (outside one, nothing is kept: no set grows for ever)."""
    found = _HIDDEN.get()
    if found is None:
        return
    for value in values:
        text = str(value).strip() if value is not None else ""
        if len(text) >= 2 and len(found) < MAX_HIDDEN:
            found.add(text)


def start_request(request_id: str) -> None:
    """A fresh set of hidden values and the request id for the log lines of one request (the
    web middleware calls it in the request's own task)."""
    _HIDDEN.set(set())
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)


@contextmanager
def personal_scope() -> Iterator[None]:
    """A fresh set of hidden values for one block (a command, a sweep, a test)."""
    reset = _HIDDEN.set(set())
    try:
        yield
    finally:
        _HIDDEN.reset(reset)


def redact(text: str, hidden: Iterable[str] | None = None) -> str:
    """``text`` without personal data, link tokens or statement parameters (the one step)."""
    text = _SQL_PARAMETERS.sub("[parameters: redacted]", text)
    text = _KEY_DETAIL.sub(r"\1[redacted]\2", text)
    text = _TOKEN.sub(r"\1[token]", text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    values = hidden if hidden is not None else (_HIDDEN.get() or ())
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "[personal]")
    return text


_URL = re.compile(r"\b([a-z][a-z0-9+.-]*://)(?:[^@/\s]*@)?([^/\s?#]+)[^\s]*", re.I)
_IP = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\d.])")
MAX_ERROR_TEXT = 300


def error_text(exc: BaseException) -> str:
    """What a failure is stored and shown as (a flow step's error, an incident): the exception's
    type and the first line of its message, without SQL, statement parameters, addresses (URLs
    keep their scheme and host only, IP addresses go), personal data or link tokens. The full
    detail goes to the (redacted) log only.

        >>> error_text(ValueError("POST http://10.0.0.5:8080/hook?phone=13812345678 failed"))
        'ValueError: POST http://[address]/… failed'
    """
    from sqlalchemy.exc import StatementError

    cause: BaseException = exc
    if isinstance(exc, StatementError) and exc.orig is not None:
        cause = exc.orig  # the driver's own message, without the statement and parameters
    first = next((line for line in str(cause).splitlines() if line.strip()), "")
    first = _SQL_PARAMETERS.sub("", first).split("[SQL:", 1)[0].strip()
    first = _URL.sub(lambda m: f"{m.group(1)}{_host(m.group(2))}/…", first)
    first = _IP.sub("[address]", redact(first))
    if len(first) > MAX_ERROR_TEXT:
        first = first[:MAX_ERROR_TEXT] + "…"
    name = type(exc).__name__  # the same on every database (the driver's classes differ)
    return f"{name}: {first}" if first else name


def _host(host: str) -> str:
    return "[address]" if _IP.fullmatch(host) or host.startswith("[") else host


def _clean_arg(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


def clean_record(record: logging.LogRecord) -> None:
    """Redact a stdlib record in place, keeping its shape (a uvicorn access record keeps its
    five arguments, so the access formatter still writes a well-formed line)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    elif record.msg is not None and not isinstance(record.msg, (int, float)):
        record.msg = redact(str(record.msg))
    if isinstance(record.args, tuple):
        record.args = tuple(_clean_arg(a) for a in record.args)
    elif isinstance(record.args, MutableMapping):
        record.args = {k: _clean_arg(v) for k, v in record.args.items()}
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        # the exception object's own text carries the values: formatters use exc_text instead
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_factory_installed: list[bool] = []


def install_record_factory() -> None:
    """Redact every stdlib record at creation, whichever logger and handler it goes to
    (pytest's caplog included); idempotent."""
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            clean_record(record)
        except Exception:
            record.msg, record.args = "[log record could not be redacted]", ()
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed.append(True)


def _redact_event(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    """structlog processor: every string value, the rendered exception included."""
    record = event.get("_record")
    if isinstance(record, logging.LogRecord) and record.exc_text and "exception" not in event:
        event["exception"] = record.exc_text  # redacted when the record was made
    for key, value in list(event.items()):
        if key == "exc_info" and value:
            info = sys.exc_info() if value is True else value
            if isinstance(info, BaseException):
                info = (type(info), info, info.__traceback__)
            if isinstance(info, tuple) and info[0] is not None:
                event["exception"] = redact(logging.Formatter().formatException(info))
            del event[key]
        elif isinstance(value, str):
            event[key] = redact(value)
        elif key not in ("_record", "_from_structlog") and value is not None \
                and not isinstance(value, (bool, int, float)):
            event[key] = redact(str(value))
    return event


def _timestamp(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    # a log line says when it was written: the wall clock, not the (possibly travelled) business
    # clock
    event["time"] = wall_clock_utc().isoformat(timespec="milliseconds")
    return event


def _renderer() -> Any:
    if os.environ.get("CARELOOP_LOG_FORMAT", "").lower() == "json":
        return structlog.processors.JSONRenderer(ensure_ascii=False)
    return structlog.processors.KeyValueRenderer(key_order=["time", "level", "logger", "event"],
                                                 drop_missing=True)


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _timestamp,
    _redact_event,
]

_configured: list[bool] = []


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time (a test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: int | str | None = None) -> None:
    """Route every logger (stdlib, uvicorn and its access log, structlog) through one handler
    whose processors end with :func:`redact`. The handler is made once per process; the level is
    ``level`` when given (``careloop serve``: ``CARELOOP_LOG_LEVEL`` or INFO, for the access
    lines), else ``CARELOOP_LOG_LEVEL`` or WARNING on the first call (a command's own output
    stays readable). uvicorn's loggers are routed again on every call (a ``logging.config`` of
    uvicorn's own may have given them handlers)."""
    install_record_factory()
    # the ticker runs every 30 s: apscheduler's "running job tick" lines would bury the access
    # lines at INFO (its warnings and errors still show)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    if _configured:
        if level is not None:
            logging.getLogger().setLevel(level)
        return
    _configured.append(True)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer()])
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    handler.set_name("careloop")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "careloop":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("CARELOOP_LOG_LEVEL", "WARNING").upper())
