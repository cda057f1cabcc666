"""People reports: service quality per attending doctor and per nursing group (the encounter's
responsible nurse), from the answers and complaints about the encounters they were responsible
for.

The figures come from the ``people_reports`` bundle's datasets, run by the report engine like any
tile (scope in SQL, labels from :mod:`careloop.reports.labels`): nothing here writes SQL.

    people_report(session, "cardiology", date(2026, 12, 1), date(2026, 12, 31), "zh-CN", None)
    ──▶ PeopleReport(department="心内科", doctors=[PersonFigures(name="赵医生", rank=1,
            responses=3, satisfaction_mean=4.67, …), PersonFigures(name="钱医生", shown=False …)],
            nursing=[…], departments=[…], hospital=…)

The minimum-sample rule (:func:`min_sample`, a setting, default 10): a person with fewer answers
than the minimum has no figures at all (the page and the PDF say 样本不足), is not ranked, and
their complaint count is withheld too, so a small sample can never be read off another column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.clock import now_utc
from careloop.engine.domain import Department
from careloop.engine.errors import CareloopError
from careloop.engine.i18n import pick
from careloop.reports.labels import dimension_labels
from careloop.reports.people_models import (
    DEFAULT_MIN_SAMPLE,
    PeopleReportOptIn,
    PeopleReportSettings,
)
from careloop.reports.query import Filters, Scope, run_dataset
from careloop.reports.spec import DatasetSpec

# The bundle's datasets, per kind of person: (ratings, complaints).
DATASETS = {"doctor": ("people_doctors", "people_complaints_doctors"),
            "nursing_group": ("people_nursing", "people_complaints_nursing")}
DEPARTMENTS_DATASET = "people_departments"
MEASURES = ("responses", "satisfaction_mean", "top_box", "nps")
MAX_MIN_SAMPLE = 1000


class PeopleReportError(CareloopError):
    """Raised for a setting that cannot be saved (``path`` names the field) or when the
    ``people_reports`` app is not installed."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.path = path


# ---- settings -----------------------------------------------------------------------------


def min_sample(session: Session) -> int:
    """The minimum number of answers a person needs before their figures are shown."""
    row = session.get(PeopleReportSettings, 1)
    return row.min_sample if row is not None else DEFAULT_MIN_SAMPLE


def set_min_sample(session: Session, value: object, actor: str) -> int:
    """Save the minimum sample; ``value`` as posted (text or number).

    Raises:
        PeopleReportError: at ``$.min_sample`` when it is not a whole number from 1 to 1000.
    """
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_MIN_SAMPLE:
        raise PeopleReportError(f"min_sample has value {value!r}. Not a whole number from 1 "
                                f"to {MAX_MIN_SAMPLE}", "$.min_sample")
    row = session.get(PeopleReportSettings, 1)
    if row is None:
        row = PeopleReportSettings(id=1)
        session.add(row)
    row.min_sample, row.updated_by, row.updated_at = number, actor[:64], now_utc()
    session.flush()
    return number


def opted_in(session: Session, user_id: int) -> bool:
    return session.get(PeopleReportOptIn, user_id) is not None


def set_opt_in(session: Session, user_id: int, on: bool) -> None:
    """A staff member chooses (or stops) to see their own report."""
    row = session.get(PeopleReportOptIn, user_id)
    if on and row is None:
        session.add(PeopleReportOptIn(user_id=user_id, opted_in_at=now_utc()))
    elif not on and row is not None:
        session.delete(row)
    session.flush()


# ---- figures ------------------------------------------------------------------------------


@dataclass(slots=True)
class PersonFigures:
    """One person's (or department's) figures; ``shown`` is False below the minimum sample,
    and then every figure is ``None``."""

    key: str
    name: str
    responses: int
    satisfaction_mean: float | None = None
    top_box: float | None = None
    nps: float | None = None
    complaints: int | None = None
    shown: bool = True
    rank: int | None = None


@dataclass(slots=True)
class PeopleReport:
    """A department's people over a period, ranked within the department."""

    department_id: str
    department: str
    date_from: date
    date_to: date
    min_sample: int
    doctors: list[PersonFigures] = field(default_factory=list)
    nursing: list[PersonFigures] = field(default_factory=list)
    departments: list[PersonFigures] = field(default_factory=list)
    hospital: PersonFigures | None = None


def dataset(session: Session, key: str) -> DatasetSpec:
    """A dataset of the ``people_reports`` app.

    Raises:
        PeopleReportError: when it is not installed.
    """
    row = store.current(session, "dataset", key)
    if row is None:
        raise PeopleReportError(f"dataset '{key}' is not installed (app people_reports)")
    return store.compile_row(row, DatasetSpec)


def installed(session: Session) -> bool:
    return store.current(session, "dataset", DEPARTMENTS_DATASET) is not None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _figures(row: dict[str, Any], key: str, name: str, minimum: int) -> PersonFigures:
    responses = int(row.get("responses") or 0)
    if responses < minimum:
        return PersonFigures(key, name, responses, shown=False)
    return PersonFigures(key, name, responses, _number(row.get("satisfaction_mean")),
                         _number(row.get("top_box")), _number(row.get("nps")))


def _key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _people(session: Session, who: str, filters: Filters, scope: Scope, minimum: int,
            locale: str) -> list[PersonFigures]:
    ratings_key, complaints_key = DATASETS[who]
    ratings = dataset(session, ratings_key)
    # regrouped by the person alone: one line each, whichever departments filter the rows
    by_person = (who,)
    rows = [r for r in run_dataset(session, ratings, filters=filters, scope=scope,
                                   dimensions=by_person).rows if r.get(who) is not None]
    complaints = {_key(r[who]): int(r.get("complaints") or 0)
                  for r in run_dataset(session, dataset(session, complaints_key),
                                       filters=filters, scope=scope,
                                       dimensions=by_person).rows
                  if r.get(who) is not None}
    keys = {_key(r[who]) for r in rows} | set(complaints)
    names = dimension_labels(session, ratings, who, keys, locale)
    merged: dict[str, dict[str, Any]] = {k: {} for k in keys}
    for r in rows:
        merged[_key(r[who])] = r
    people = []
    for key in sorted(keys):
        person = _figures(merged[key], key, names.get(key, key), minimum)
        if person.shown:
            person.complaints = complaints.get(key, 0)
        people.append(person)
    return rank(people)


def rank(people: Sequence[PersonFigures]) -> list[PersonFigures]:
    """Shown people first, by mean satisfaction (then top-box share, then answers), numbered
    1, 2, 2, 4 … for ties; people below the minimum sample last, unranked, by name."""
    def order(p: PersonFigures) -> tuple[float, float, int, str]:
        return (-(p.satisfaction_mean or 0.0), -(p.top_box or 0.0), -p.responses, p.name)

    shown = sorted((p for p in people if p.shown), key=order)
    previous: tuple[float, float] | None = None
    for index, person in enumerate(shown, start=1):
        score = (person.satisfaction_mean or 0.0, person.top_box or 0.0)
        person.rank = index if score != previous else shown[index - 2].rank
        previous = score
    return shown + sorted((p for p in people if not p.shown), key=lambda p: p.name)


def department_name(session: Session, department_id: str, locale: str) -> str:
    row = session.get(Department, department_id)
    return (pick(row.name, locale) or department_id) if row is not None else department_id


def department_comparison(session: Session, filters: Filters, scope: Scope, minimum: int,
                          locale: str) -> tuple[list[PersonFigures], PersonFigures]:
    """Each department in ``scope`` and the hospital as a whole (an aggregate over every
    department: no other department's figures are shown to a department's head)."""
    spec = dataset(session, DEPARTMENTS_DATASET)
    rows = [r for r in run_dataset(session, spec, filters=filters, scope=scope).rows
            if r.get("department") is not None]
    names = dimension_labels(session, spec, "department",
                             {str(r["department"]) for r in rows}, locale)
    departments = rank([_figures(r, str(r["department"]),
                                 names.get(str(r["department"]), str(r["department"])), minimum)
                        for r in rows])
    whole = run_dataset(session, spec, filters=filters, scope=None, dimensions=()).rows
    hospital = _figures(whole[0] if whole else {}, "", "", minimum)
    return departments, hospital


def people_report(session: Session, department_id: str, date_from: date, date_to: date,
                  locale: str, scope: Scope) -> PeopleReport:
    """The people of one department between two hospital-local dates (inclusive)."""
    minimum = min_sample(session)
    filters = Filters(date_from=date_from, date_to=date_to, departments=(department_id,))
    report = PeopleReport(department_id, department_name(session, department_id, locale),
                          date_from, date_to, minimum)
    report.doctors = _people(session, "doctor", filters, scope, minimum, locale)
    report.nursing = _people(session, "nursing_group", filters, scope, minimum, locale)
    report.departments, report.hospital = department_comparison(
        session, Filters(date_from=date_from, date_to=date_to), scope, minimum, locale)
    return report


def own_figures(session: Session, user_id: int, date_from: date, date_to: date,
                locale: str) -> dict[str, PersonFigures | None]:
    """A staff member's own figures, as doctor and as nurse, in every department (``None``
    where they were named on no encounter answered in the period)."""
    minimum = min_sample(session)
    out: dict[str, PersonFigures | None] = {}
    for who in DATASETS:
        filters = Filters(date_from=date_from, date_to=date_to).with_equal(who, str(user_id))
        found = [p for p in _people(session, who, filters, None, minimum, locale)
                 if p.key == str(user_id)]
        out[who] = found[0] if found else None
    return out


def heads_of(session: Session, department_id: str, roles: Sequence[str]) -> list[int]:
    """Users holding one of ``roles`` in the department (its heads)."""
    from careloop.engine.domain import RoleGrant, User

    return list(session.scalars(
        select(RoleGrant.user_id).join(User, User.id == RoleGrant.user_id)
        .where(RoleGrant.department_id == department_id, RoleGrant.role.in_(roles),
               User.active.is_(True)).order_by(RoleGrant.user_id).distinct()))


def month_bounds(month: str) -> tuple[date, date]:
    """``"2026-12"`` → (2026-12-01, 2026-12-31).

    Raises:
        PeopleReportError: at ``$.month`` for anything but ``YYYY-MM``.
    """
    try:
        year, number = (int(x) for x in month.split("-"))
        first = date(year, number, 1)
    except ValueError as exc:
        raise PeopleReportError(f"month has value {month!r}. Not a month such as 2026-12",
                                "$.month") from exc
    following = date(year + (number == 12), number % 12 + 1, 1)
    return first, following - timedelta(days=1)


def previous_month(today: date) -> str:
    last = today.replace(day=1) - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"
