"""The builder's "simulate": run an app's journey scenarios against a user's drafts.

    live database ──read──▶ scratch folder: every app as stored, the user's drafts written over
                            the published files (the draft being edited as posted)
    python -m careloop.web.simulate FOLDER  (a child process, killed after the time limit)
        careloop.web.scenarios.load.select(app)     checked like ``careloop validate``
        careloop.web.scenarios.runner.run_scenario  in a scratch SQLite file, always
        + a timeline read from the scratch database before it is removed

The child process matters: a scenario freezes the clock and makes its scratch database the
process's default engine, which must never happen inside the live server; and a scenario that
runs too long can be stopped. The live database is only read (definitions, manifests, drafts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.bundles import MANIFEST
from careloop.engine.limits import child_limits
from careloop.engine.models import BundleRow

DEFAULT_TIMEOUT = 120.0  # seconds; CARELOOP_SIMULATE_TIMEOUT overrides
RESULT = "result.json"
# simulations at once in this process (each is a child process using a core);
# CARELOOP_SIMULATE_CONCURRENCY overrides; more are refused (429), not queued
_CONCURRENCY = os.environ.get("CARELOOP_SIMULATE_CONCURRENCY", "").strip()
RUNNING = threading.BoundedSemaphore(max(1, int(_CONCURRENCY)) if _CONCURRENCY.isdigit() else 2)
REQUEST = "request.json"


class SimulateTimeout(Exception):
    """Raised when the scenarios did not finish within the time limit (the run was stopped)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"stopped after {seconds:g} s")
        self.seconds = seconds


class SimulateFailed(Exception):
    """Raised when the child process ended without a result (its last output lines say why)."""


@dataclass(slots=True)
class Draft:
    """A definition text to use instead of the published one."""

    app_id: str
    kind: str
    key: str
    text: str
    source_path: str


def timeout_seconds() -> float:
    raw = os.environ.get("CARELOOP_SIMULATE_TIMEOUT", "")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        return DEFAULT_TIMEOUT


def write_apps(session: Session, folder: Path, drafts: list[Draft]) -> None:
    """Every stored app as a bundle folder under ``folder`` (``folder/<app>/app.yaml`` and its
    current definitions, byte-for-byte as published), with ``drafts`` written over the
    published files of the same kind and key."""
    replaced = {(d.kind, d.key): d for d in drafts}
    for app in session.scalars(select(BundleRow).order_by(BundleRow.id)):
        root = folder / app.id
        root.mkdir(parents=True)
        (root / MANIFEST).write_text(app.manifest_text, "utf-8")
        for row in store.list_current(session, app_id=app.id):
            if (row.kind, row.key) in replaced:
                continue
            _write(root, row.source_path, row.source_text)
    for draft in drafts:
        if (folder / draft.app_id / MANIFEST).is_file():
            _write(folder / draft.app_id, draft.source_path, draft.text)


def _write(root: Path, relative: str, text: str) -> None:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        return  # a stored path never leaves its bundle; ignore one that would
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")


def run_in_child(folder: Path, app_id: str, scenarios: list[str] | None,
                 timeout: float | None = None) -> dict[str, Any]:
    """Run the app's scenarios (all, or the named ones) from the bundles in ``folder`` in a
    child process; its scratch database is always a SQLite file.

    Raises:
        SimulateTimeout: if it ran longer than ``timeout`` seconds (it is killed).
        SimulateFailed: if it ended without a result.
    """
    limit = timeout if timeout is not None else timeout_seconds()
    (folder / REQUEST).write_text(json.dumps({"app": app_id, "scenarios": scenarios}), "utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CARELOOP_DATABASE_URL"}
    env["CARELOOP_DATABASE_URL"] = f"sqlite:///{folder / 'unused.db'}"  # never the live one
    env["CARELOOP_AUDIT_CHECKPOINTS"] = "off"  # the scratch audit trail is not the hospital's
    try:
        done = subprocess.run([sys.executable, "-m", "careloop.web.simulate", str(folder)],
                              env=env, cwd=folder / "apps", capture_output=True, text=True,
                              timeout=limit, check=False,
                              preexec_fn=child_limits(limit))  # memory and CPU bounded too
    except subprocess.TimeoutExpired as exc:
        raise SimulateTimeout(limit) from exc
    result = folder / RESULT
    if not result.is_file():
        tail = "\n".join((done.stderr or "").strip().splitlines()[-5:])
        raise SimulateFailed(f"exit {done.returncode}: {tail}")
    data: dict[str, Any] = json.loads(result.read_text("utf-8"))
    return data


# --- the child process ------------------------------------------------------------------------

_TASK_ACTIONS = {
    "created": ("创建任务", "task created"),
    "escalated": ("任务升级", "task escalated"),
    "completed": ("任务完成", "task completed"),
    "cancelled": ("任务取消", "task cancelled"),
    "reassigned": ("任务改派", "task reassigned"),
    "retry_scheduled": ("安排再次随访", "another attempt scheduled"),
    "retries_exhausted": ("随访次数用完", "no attempts left"),
}
_RUN_STATUS = {
    "running": ("进行中", "running"), "waiting": ("等待中", "waiting"),
    "completed": ("已完成", "completed"), "cancelled": ("已取消", "cancelled"),
    "failed": ("失败", "failed"),
}
_CHANNELS = {"wechat": ("微信", "WeChat"), "sms": ("短信", "SMS"), "email": ("邮件", "email"),
             "log": ("日志", "log"), "app": ("应用内", "in-app")}
_PRIORITY = {"urgent": ("紧急", "urgent"), "high": ("高", "high"), "normal": ("普通", "normal"),
             "low": ("低", "low")}


def _pair(table: dict[str, tuple[str, str]], code: str | None) -> tuple[str, str]:
    return table.get(code or "", (code or "", code or ""))


def _words(prefix: str, code: str, table: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """The UI's words for a status or channel code (``web.outbox.status.logged`` →
    "已记录，未实际发送"), else this module's, else the code."""
    from careloop.engine.i18n import t

    key = f"{prefix}.{code}"
    zh, en = t(key, "zh-CN"), t(key, "en")
    if zh == key or en == key:
        return _pair(table, code)
    return zh, en.lower() if prefix == "web.outbox.status" else en


def timeline(engine: Engine) -> list[dict[str, Any]]:
    """What happened to the patients of a finished run, oldest first, in hospital time:
    flows started and ended, messages (sent or not), answers submitted, tasks and their
    history. Each entry: ``at`` (``YYYY-MM-DD HH:MM``), ``type``, ``patient``, ``zh-CN``, ``en``.
    """
    from careloop.engine.clock import to_local
    from careloop.engine.db import transaction
    from careloop.engine.domain import Department, Encounter, Task, TaskHistory, User
    from careloop.flows.models import FlowRun, OutboxMessage
    from careloop.forms.models import Submission

    entries: list[tuple[Any, int, int, dict[str, Any]]] = []

    def add(at: Any, kind: str, patient: str | None, zh: str, en: str, rank: int = 1) -> None:
        """``rank`` orders entries of one instant: a flow's start (0), what it did (1), its
        end (2)."""
        if at is None:
            return
        entries.append((at, rank, len(entries), {"at": to_local(at).strftime("%Y-%m-%d %H:%M"),
                                           "type": kind, "patient": patient,
                                           "zh-CN": zh, "en": en}))

    with transaction(engine) as session:
        titles: dict[tuple[str, str], dict[str, str]] = {}
        departments = {d.id: dict(d.name or {}) for d in session.scalars(select(Department))}
        users = {u.id: u.display_name for u in session.scalars(select(User))}

        def title(kind: str, key: str) -> tuple[str, str]:
            if (kind, key) not in titles:
                row = store.current(session, kind, key)
                titles[(kind, key)] = dict(row.title or {}) if row is not None else {}
            found = titles[(kind, key)]
            return (found.get("zh-CN") or found.get("en") or key,
                    found.get("en") or found.get("zh-CN") or key)

        for stay in session.scalars(select(Encounter).order_by(Encounter.id)):
            dzh, den = _names(departments.get(stay.department_id))
            add(stay.admitted_at, "encounter", stay.patient_id, f"入院（{dzh}）",
                f"admitted ({den})", rank=0)
            add(stay.discharged_at, "discharge", stay.patient_id, f"出院（{dzh}）",
                f"discharged ({den})", rank=0)
        for run in session.scalars(select(FlowRun).order_by(FlowRun.id)):
            zh, en = title("flow", run.flow_key)
            add(run.started_at, "flow", run.patient_id, f"流程「{zh}」开始",
                f"flow “{en}” started", rank=0)
            if run.finished_at is not None:
                szh, sen = _pair(_RUN_STATUS, run.status)
                add(run.finished_at, "flow", run.patient_id, f"流程「{zh}」{szh}",
                    f"flow “{en}” {sen}", rank=2)
        for message in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)):
            zh, en = title("template", message.template_key)
            czh, cen = _words("web.channel", message.channel, _CHANNELS)
            szh, sen = _words("web.outbox.status", message.status, {})
            add(message.sent_at or message.created_at, "message", message.patient_id,
                f"消息「{zh}」（{czh}）：{szh}", f"message “{en}” ({cen}): {sen}")
        for submission in session.scalars(select(Submission).order_by(Submission.id)):
            zh, en = title("form", submission.form_key)
            add(submission.submitted_at, "submission", submission.patient_id,
                f"患者提交「{zh}」", f"the patient answered “{en}”")
        tasks = {t.id: t for t in session.scalars(select(Task))}
        history = list(session.scalars(select(TaskHistory).order_by(TaskHistory.id)))
        # who held each task when, and until when: an escalation's ``from`` is who held it
        # before; the last holder is the task's own, due at its due time
        held: dict[int, list[tuple[dict[str, Any], Any]]] = {}
        for item in history:
            if item.action == "escalated" and isinstance((item.details or {}).get("from"), dict):
                held.setdefault(item.task_id, []).append((item.details["from"], item.at))
        for task_id, held_task in tasks.items():
            held.setdefault(task_id, []).append(
                ({"role": held_task.assignee_role, "user": held_task.assignee_user_id},
                 held_task.due_at))
        turn: dict[int, int] = {}
        for item in history:
            task = tasks.get(item.task_id)
            if task is None:
                continue
            azh, aen = _pair(_TASK_ACTIONS, item.action)
            pzh, pen = _pair(_PRIORITY, task.priority)
            add(item.at, "task", task.patient_id, f"{azh}：{task.title}（{pzh}）",
                f"{aen}: {task.title} ({pen})")
            if item.action in ("created", "escalated"):
                index = turn[task.id] = turn.get(task.id, -1) + 1
                chain = held[task.id]
                holder, until = chain[min(index, len(chain) - 1)]
                entries[-1][3]["task"] = {
                    "who": _assignee(holder, task.department_id, departments, users),
                    "title": task.title, "priority": {"zh-CN": pzh, "en": pen}}
                entries[-1][3]["due"] = until
    ordered = [entry for *_, entry in sorted(entries, key=lambda e: (e[0], e[1], e[2]))]
    instants = {id(entry): at for at, _, _, entry in entries}
    day0 = next((instants[id(e)] for e in ordered if e["type"] == "discharge"),
                instants[id(ordered[0])] if ordered else None)
    for entry in ordered:  # 第0天 is the discharge (else the first thing that happened)
        entry["day"] = day_number(day0, instants[id(entry)])
        entry["time"] = to_local(instants[id(entry)]).strftime("%H:%M")
        if "due" in entry:
            due = entry.pop("due")
            entry["task"]["due_day"] = day_number(day0, due) if due is not None else None
            entry["task"]["due_time"] = to_local(due).strftime("%H:%M") if due else None
    return ordered


def day_number(day0: Any, at: Any) -> int:
    """Days from ``day0`` to ``at`` on the hospital's calendar (the local dates)."""
    from careloop.engine.clock import to_local

    if day0 is None or at is None:
        return 0
    return (to_local(at).date() - to_local(day0).date()).days


def _names(name: dict[str, str] | None) -> tuple[str, str]:
    name = name or {}
    return (name.get("zh-CN") or name.get("en") or "", name.get("en") or name.get("zh-CN") or "")


def _assignee(holder: dict[str, Any], department: str | None,
              departments: dict[str, dict[str, str]], users: dict[int, str]) -> dict[str, str]:
    """Who holds a task, in words: "心内科 护士长" / "Cardiology Head nurse" (a person by
    name)."""
    from careloop.engine.registry import loaded_registry

    roles = loaded_registry().catalogue("role")
    code = holder.get("role")
    role = roles.get(code) if isinstance(code, str) and code in roles else None
    title = dict(getattr(role, "title", None) or {})
    dzh, den = _names(departments.get(department or ""))
    rzh = title.get("zh-CN") or title.get("en") or ""
    ren = title.get("en") or title.get("zh-CN") or ""
    user = holder.get("user")
    person = users.get(user, "") if isinstance(user, int) else ""
    zh = " ".join(x for x in (dzh, rzh, person) if x)
    en = " ".join(x for x in (den, ren, person) if x)
    return {"zh-CN": zh, "en": en}


def _titles(engine: Engine) -> dict[tuple[str, str], dict[str, str]]:
    """Every current definition's title and every department's name, by (kind, key)."""
    from careloop.engine.db import transaction
    from careloop.engine.domain import Department

    with transaction(engine) as session:
        out = {(row.kind, row.key): dict(row.title or {}) for row in store.list_current(session)}
        out.update({("department", d.id): dict(d.name or {})
                    for d in session.scalars(select(Department))})
    return out


_EXPECT_PATH = re.compile(r"^\$\.steps\[(\d+)\]\.expect\[(\d+)\]")
_SAW = re.compile(r"\bsaw (\d+)\b")
_KIND_OF = {"template": "template", "form": "form", "flow": "flow", "department": "department"}


def expectation_words(spec: Any, step: dict[str, Any], failure: dict[str, Any],
                      names: dict[tuple[str, str], dict[str, str]],
                      seen: list[dict[str, Any]]) -> dict[str, str]:
    """A failed expectation in words, in both languages: when (第3天 09:31), what was
    expected (发送消息「出院第3天关怀」 1 条，第3天 09:30 至 09:31 之间) and how many were seen —
    never the scenario's keys, codes or ISO times (those stay in ``message``)."""
    from datetime import datetime

    from careloop.engine.clock import to_local
    from careloop.engine.i18n import t
    from careloop.engine.registry import loaded_registry
    from careloop.web.scenarios.compiler import parse_instant

    first = next((e for e in seen if e.get("day") == 0), None)
    day0 = (datetime.strptime(first["at"], "%Y-%m-%d %H:%M").date() if first
            else to_local(spec.start).date())

    def when(local: datetime, locale: str) -> str:
        return f"{t('builder.sim.day', locale, n=(local.date() - day0).days)} {local:%H:%M}"

    found = _EXPECT_PATH.match(str(failure.get("path") or ""))
    expect = None
    if found is not None:
        i, j = int(found.group(1)), int(found.group(2))
        if i < len(spec.steps) and j < len(spec.steps[i].expects):
            expect = spec.steps[i].expects[j]
    options = expect.options if expect is not None and isinstance(expect.options, dict) else {}
    kind = expect.kind if expect is not None else ""
    at = datetime.strptime(str(step["at"]), "%Y-%m-%d %H:%M")
    roles = loaded_registry().catalogue("role")
    out = {}
    for locale in ("zh-CN", "en"):
        def title(kind: str, key: Any, locale: str = locale) -> str:
            found = names.get((kind, str(key))) or {}
            other = "en" if locale == "zh-CN" else "zh-CN"
            return found.get(locale) or found.get(other) or ""

        def quoted(text: str, locale: str = locale) -> str:
            if not text:
                return ""
            return f"「{text}」" if locale == "zh-CN" else f" “{text}”"

        parts: list[str] = []
        if kind == "messages":
            what = t("builder.sim.expect_messages", locale,
                     template=quoted(title("template", options.get("template"))))
        elif kind == "tasks":
            role = roles.get(options["role"]) if options.get("role") in roles else None
            who = " ".join(x for x in (title("department", options.get("department")),
                                       (role.title.get(locale) or "") if role else "") if x)
            what = t("builder.sim.expect_tasks", locale, who=quoted(who))
        elif kind == "submissions":
            what = t("builder.sim.expect_submissions", locale,
                     form=quoted(title("form", options.get("form"))))
        elif kind == "flow_runs":
            what = t("builder.sim.expect_flow_runs", locale,
                     flow=quoted(title("flow", options.get("flow"))))
        else:
            what = t("builder.sim.expect_other", locale, kind=kind.replace("_", " "))
        if isinstance(options.get("count"), int):
            what += t("builder.sim.expect_count", locale, n=options["count"])
        bounds = []
        for name in ("after", "before"):
            try:
                bounds.append(when(to_local(parse_instant(str(options[name]))), locale))
            except Exception:
                bounds.append("")
        if all(bounds):
            parts.append(t("builder.sim.expect_between", locale, after=bounds[0],
                           before=bounds[1]))
        saw = _SAW.search(str(failure.get("message") or ""))
        out[locale] = t("builder.sim.expect_line", locale, when=when(at, locale),
                        what=what + "".join(parts),
                        saw=saw.group(1) if saw else t("builder.sim.unknown_saw", locale))
    return out


def child_main(folder: Path) -> int:
    """The child process: run the requested scenarios, write ``result.json``."""
    from careloop.web.scenarios.load import select as select_scenarios
    from careloop.web.scenarios.runner import run_scenario

    request = json.loads((folder / REQUEST).read_text("utf-8"))
    apps = folder / "apps"
    app = apps / request["app"]
    wanted = request.get("scenarios")
    selection = select_scenarios([str(app)], apps)
    out: dict[str, Any] = {"problems": [p.to_json() for p in selection.problems],
                           "scenarios": []}
    chosen = [(s, a) for s, a in selection.scenarios if wanted is None or s.key in wanted]
    out["missing"] = sorted(set(wanted or ()) - {s.key for s, _ in chosen})
    if not selection.problems:
        for spec, root in chosen:
            seen: list[dict[str, Any]] = []
            names: dict[tuple[str, str], dict[str, str]] = {}

            def observe(engine: Engine, seen: list[dict[str, Any]] = seen,
                        names: dict[tuple[str, str], dict[str, str]] = names) -> None:
                seen.extend(timeline(engine))
                names.update(_titles(engine))

            result = run_scenario(spec, root, database_url="", observe=observe)
            data = result.to_json()
            for step in data["steps"]:
                for failure in step["failures"]:
                    failure["words"] = expectation_words(spec, step, failure, names, seen)
            out["scenarios"].append({**data, "title": spec.title, "timeline": seen})
    (folder / RESULT).write_text(json.dumps(out, ensure_ascii=False, default=str), "utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover - run as the child process
    sys.exit(child_main(Path(sys.argv[1])))
