"""The limits on everything an author's text makes the server do, as one typed settings object.

Authors write YAML, JSON, zip bundles, expressions and Jinja message templates; the server parses
and runs them in the builder's checks, try-its and previews and at run time. Every place that does
reads its bounds from :data:`LIMITS` (a frozen :class:`Limits`), checks them *before* the work
starts where it can (text size, zip sizes, alias count, nesting depth) and while the work runs
where it cannot (node count of an expanded YAML tree, items an expression builds, template loop
iterations and output). A bound that is reached raises :class:`LimitExceeded`, whose
:class:`~careloop.engine.errors.Problem` names the limit (``source.too-deep``, ``expr.too-large``,
``template.too-large``…); the web layer answers it with a 4xx, never a 500. See the "Limits"
section of ``docs/security.md``.

    >>> LIMITS.source_depth
    64
    >>> LimitExceeded("source.too-deep", "nested deeper than 64 levels", limit="source_depth",
    ...               file="a.yaml", line=3, column=5).problem.render()
    'a.yaml:3:5: source.too-deep at $ — nested deeper than 64 levels (limit: source_depth = 64)'
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from careloop.engine.errors import CareloopError, Path, Problem

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound on author-supplied work (sizes in bytes or characters, times in seconds)."""

    # YAML / JSON sources (a definition file, a builder draft, a bundle member)
    source_bytes: int = 256 * 1024  # characters of one definition (the largest shipped: 7 KB)
    source_depth: int = 64  # nesting of mappings and sequences
    source_aliases: int = 100  # YAML aliases (*name) in one document
    source_nodes: int = 200_000  # values after aliases are expanded
    # zip bundles
    zip_entries: int = 5000  # members of one archive
    zip_bytes: int = 64 * 1024 * 1024  # declared uncompressed size of all members together
    zip_ratio: int = 100  # uncompressed / compressed size of one member
    # expressions (rules, flows, forms, reports)
    expr_length: int = 2_000  # characters of expression text
    expr_depth: int = 32  # nesting of syntax nodes
    expr_steps: int = 10_000  # node evaluations (plus one per list item a function receives)
    expr_integer: int = 10**18  # largest integer literal or result
    expr_items: int = 10_000  # items a built value holds, nested items counted in full
    # Jinja message templates (rule titles and messages, the template kind)
    template_output: int = 100_000  # characters one rendering produces
    template_items: int = 10_000  # items of a range or a repeated list, width of a field
    template_steps: int = 100_000  # loop iterations and calls (macros, methods) of one rendering
    # author work run off the event loop (checks of drafts, try-its, previews)
    work_seconds: float = 20.0  # wall-clock bound of one request's author work
    child_memory_bytes: int = 4 * 1024**3  # address space of a child process (simulations)
    # JSON request bodies, checked before any route parses them (web/bodyguard.py)
    request_json_depth: int = 72  # nesting (a definition's source_depth and its envelope)
    request_json_items: int = 10_000  # items of one array or members of one object
    request_json_nodes: int = 200_000  # values in the whole body
    event_json_items: int = 1_000  # items of one array of an HIS event (tags, diagnoses…)

    def describe(self, name: str) -> str:
        """``name = value`` for a message (``source_depth = 64``)."""
        return f"{name} = {getattr(self, name)}"


LIMITS = Limits()

# The codes of problems that say "beyond a limit" (the API answers them with 422, not a result).
LIMIT_CODES = frozenset({
    "source.too-large", "source.too-deep", "source.too-many-aliases", "source.too-many-nodes",
    "bundle.zip-too-large", "bundle.zip-ratio", "bundle.zip-entries", "bundle.zip-size-mismatch",
    "template.too-large", "expr.too-large", "expr.budget", "limits.timeout",
})


def replace(**changes: Any) -> Limits:
    """A copy of :data:`LIMITS` with ``changes`` (for tests and embedding applications)."""
    return dataclasses.replace(LIMITS, **changes)


class LimitExceeded(CareloopError):
    """Raised when author-supplied text or work reaches one of :data:`LIMITS`.

    ``problem`` is located (file, line, column, path) as far as the raiser knows; a caller that
    knows the document can :meth:`locate` it.
    """

    def __init__(self, code: str, message: str, *, limit: str, path: Path = (),
                 file: str | None = None, line: int | None = None, column: int | None = None,
                 hint: str | None = None) -> None:
        self.code = code
        self.limit = limit
        shown = f"{message} (limit: {LIMITS.describe(limit)})" if hasattr(LIMITS, limit) \
            else message
        self.problem = Problem(code, shown, path=path, file=file, line=line, column=column,
                               hint=hint)
        super().__init__(self.problem.render())

    @classmethod
    def from_problem(cls, problem: Problem) -> LimitExceeded:
        """The error for a problem a checker already collected (a source over a limit)."""
        exc = cls(problem.code, problem.message, limit="")
        exc.problem = problem
        exc.args = (problem.render(),)
        return exc

    def locate(self, *, file: str | None, line: int | None, column: int | None,
               path: Path | None = None) -> LimitExceeded:
        """This error placed in a document (keeps what is already known)."""
        p = self.problem
        self.problem = dataclasses.replace(
            p, file=p.file or file, line=p.line or line, column=p.column or column,
            path=p.path if path is None else path)
        self.args = (self.problem.render(),)
        return self


    def prefixed(self, prefix: Path) -> LimitExceeded:
        """This error with its path under ``prefix`` (a caller one level up adds its part)."""
        self.problem = dataclasses.replace(self.problem, path=(*prefix, *self.problem.path))
        self.args = (self.problem.render(),)
        return self


class WorkTimeout(CareloopError):
    """Raised when author work did not finish within ``LIMITS.work_seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.problem = Problem("limits.timeout",
                               f"the work took longer than {seconds:g} seconds and was stopped "
                               f"(limit: {LIMITS.describe('work_seconds')})",
                               hint="make the definition smaller or simpler")
        super().__init__(self.problem.render())


def child_limits(cpu_seconds: float) -> Callable[[], None]:
    """A ``preexec_fn`` giving a child process (a simulation) resource limits: at most
    ``LIMITS.child_memory_bytes`` of address space and ``cpu_seconds`` of CPU (POSIX only)."""
    def apply() -> None:
        try:
            import resource
        except ImportError:  # not POSIX: the wall-clock timeout still applies
            return
        memory = LIMITS.child_memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        cpu = max(1, int(cpu_seconds) + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))

    return apply


async def off_loop(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run CPU-heavy author work in the threadpool, never on the event loop, with a time bound.

    The event loop (and so ``/healthz`` and every other request) stays responsive while it runs;
    past ``LIMITS.work_seconds`` the caller gets :class:`WorkTimeout` (the thread finishes on its
    own: the bounds above keep that short).
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(func, *args, **kwargs),
                                      timeout=LIMITS.work_seconds)
    except TimeoutError:
        raise WorkTimeout(LIMITS.work_seconds) from None
