"""Response models of the builder's JSON API (``/api/v1/builder/…``, routes_builder.py).

Same rules as :mod:`careloop.web.api_models`: each mirrors the JSON the route returns, key for
key; palettes a plugin extends are :class:`~careloop.web.api_models.Open`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from careloop.web.api_models import Closed, Open, ProblemBody, Text


class FieldTypePanel(Open):
    """A form field type: palette entry and its property panel's options."""

    name: str
    title: Text
    options: dict[str, Any]
    uses_choices: bool
    uses_rows: bool
    answerable: bool
    widget: str
    group: bool
    fhir: str | None
    answer: str | None = None


class ScoreMethodPanel(Open):
    name: str
    title: Text
    options: dict[str, Any]
    required: list[str]
    needs_fields: bool


class StepEdge(Closed):
    """One kind of outgoing edge of a step type (the option holding the target keys)."""

    option: str
    label: Text
    many: bool
    item: str | None
    fallback: bool
    mode: str | None
    fork: bool


class RetryOut(Closed):
    attempts: int
    backoff: str


class StepTypePanel(Open):
    """A flow step type, all the flow designer draws and checks a step from (no graph rule in
    JS): options as JSON Schemas, required options (a list inside: one of these), edges,
    pausing, resume events, retry policy."""

    name: str
    title: Text
    edges: list[StepEdge]
    modes: list[str]
    pauses: bool
    forks: bool
    labels: dict[str, dict[str, Text]]
    resumes: list[str]
    retry: RetryOut
    options: dict[str, Any]
    required: list[str | list[str]]


class DefinitionKey(Closed):
    key: str
    title: dict[str, Any]
    app: str | None


class FunctionDoc(Closed):
    name: str
    signature: str
    doc: str


class DraftChecked(Closed):
    """A draft checked with the same checker as ``careloop validate``."""

    ok: bool
    body: Any
    yaml: str
    file: str | None
    problems: list[ProblemBody]


class AwaitingApproval(Open):
    """A publish waiting for a second person's approval."""

    request: int
    status: str
    reasons: list[str]
    app: str | None
    kind: str
    key: str
    version: int | None


class DraftOut(DraftChecked):
    app: str | None
    has_draft: bool
    current_version: int | None
    awaiting_approval: AwaitingApproval | None


class Change(Closed):
    """One difference of a draft from the current version, in words (web/builder_changes.py)."""

    op: str
    path: str
    text: str
    where: str | None = None
    prop: str | None = None
    old: str | None = None
    new: str | None = None


class DraftDiff(DraftChecked):
    diff: Any
    changes: list[Change] = Field(default_factory=list)
    current_version: int | None
    impact: Any


class Deleted(Closed):
    deleted: bool


class Published(Closed):
    kind: str
    key: str
    version: int
    app: str | None


class PublishAwaiting(AwaitingApproval):
    """202: the publish waits for approval (``status``: ``awaiting_approval``)."""

    message: str


class FormPreview(Open):
    """The draft form's first patient page as HTML (``null`` with ``problems``: how many the
    draft has)."""

    html: str | None


class ChartPreview(Open):
    """The chart as an SVG data URL (``null`` with ``problems`` when the draft has errors;
    ``empty`` when drawn on sample data)."""

    image: str | None


class ChartTypePanel(Open):
    name: str
    title: str
    channels: list[str]
    required: list[str]
    options: dict[str, Any]


class ChartOptions(Closed):
    datasets: list[str]
    charts: list[str]
    types: list[str]
    type_panels: list[ChartTypePanel]
    channels: list[str]
    dimensions: list[str]
    drill_levels: list[str]
    filters: list[str]
    ops: list[str]
    severities: list[str]
    # group (datasets, charts, dimensions, …) → code → what a person reads
    labels: dict[str, dict[str, str]] = Field(default_factory=dict)


class DatasetColumns(Closed):
    dimensions: list[str]
    measures: list[str]
    labels: dict[str, str] = Field(default_factory=dict)  # column → its title


class DatasetOptions(Open):
    """What the dataset designer offers, each by its title: ``sources`` (``name``, ``title``,
    ``dimensions``), ``dimensions`` (``name``, ``title``), ``measures`` (``name``, ``title``,
    ``sources``, ``needs_field``) and ``forms`` (``key``, ``title``)."""

    sources: list[dict[str, Any]]
    dimensions: list[dict[str, Any]]
    measures: list[dict[str, Any]]
    forms: list[dict[str, Any]]


class DatasetPreview(Open):
    """A draft dataset's first rows on the viewer's scoped data, every cell in words
    (``columns``: ``key``, ``title``; ``rows``: lists of texts); ``null`` columns and
    ``problems`` while the draft has errors."""

    columns: list[dict[str, str]] | None
    rows: list[list[str]] = Field(default_factory=list)


class AlertTryRow(Closed):
    group: str
    value: Any
    breach: bool


class AlertTry(Closed):
    rows: list[AlertTryRow]
    op: str
    threshold: Any
    date_from: str
    date_to: str
    breaching: int


class ScenarioChoice(Closed):
    key: str
    title: dict[str, Any]
    draft: bool


class SimulationOut(Closed):
    ok: bool
    app: str
    database: str
    problems: list[Any]
    scenarios: list[dict[str, Any]]


class ImportPlan(Open):
    """A bundle's import plan (and, with ``apply``, what was applied): refs by status
    (``added``, ``changed`` …), conflicts with live versions, diffs and problems."""

    app: str | None
    version: str | None
    applied: bool
    manifest_changed: bool


class ChoiceWords(Closed):
    code: str
    label: Text


class FieldWords(Closed):
    """A form field as the condition sentences name it (web/builder_words.py)."""

    key: str
    label: Text
    type: str
    type_title: Text
    answer: str
    choices: list[ChoiceWords]


class CategoryWords(Closed):
    key: str
    title: Text


class ActionTypeWords(Open):
    """A rule action type: its title, and its options' JSON Schemas marked for the rule
    editor's panel (``x-def``, ``x-enum-labels``, ``x-reference``) with the required ones."""

    name: str
    title: Text
    options: dict[str, Any]
    required: list[str]


class UsedBy(Closed):
    """A current definition that refers to the one being edited (web/builder_usage.py)."""

    kind: str
    key: str
    app: str
    title: Text
    kind_title: Text
