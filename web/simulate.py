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
    from careloop.engine.domain import Task, TaskHistory
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

        def title(kind: str, key: str) -> tuple[str, str]:
            if (kind, key) not in titles:
                row = store.current(session, kind, key)
                titles[(kind, key)] = dict(row.title or {}) if row is not None else {}
            found = titles[(kind, key)]
            return (found.get("zh-CN") or found.get("en") or key,
                    found.get("en") or found.get("zh-CN") or key)

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
        for item in session.scalars(select(TaskHistory).order_by(TaskHistory.id)):
            task = tasks.get(item.task_id)
            if task is None:
                continue
            azh, aen = _pair(_TASK_ACTIONS, item.action)
            pzh, pen = _pair(_PRIORITY, task.priority)
            add(item.at, "task", task.patient_id, f"{azh}：{task.title}（{pzh}）",
                f"{aen}: {task.title} ({pen})")
    return [entry for *_, entry in sorted(entries, key=lambda e: (e[0], e[1], e[2]))]


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

            def observe(engine: Engine, seen: list[dict[str, Any]] = seen) -> None:
                seen.extend(timeline(engine))

            result = run_scenario(spec, root, database_url="", observe=observe)
            out["scenarios"].append({**result.to_json(), "title": spec.title,
                                     "timeline": seen})
    (folder / RESULT).write_text(json.dumps(out, ensure_ascii=False, default=str), "utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover - run as the child process
    sys.exit(child_main(Path(sys.argv[1])))
