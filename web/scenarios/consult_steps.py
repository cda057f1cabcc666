"""Scenario steps of Consult / Q&A, done on the patient's phone through the public pages.

    patient_asks: {patient: P1, template: medication_guidance, desk: cardiology,
                   question: 降压药饭前还是饭后吃？}
        the newest delivered message (of that template) with a patient link is opened, the
        page's "在线咨询" link followed, the question sent on the ask page
    patient_reads_answer: {patient: P1, contains: [饭后]}
        the link of the newest delivered answer message (consult_answer) is opened; the thread
        page must show each text
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from careloop.engine.db import transaction
from careloop.web.scenarios.journey import UNDELIVERED, StepFailed

PATIENT_LINK = re.compile(r"(?:https?://[^\s/]+)?/(?:d|r|q)/[A-Za-z0-9_\-]{16,128}")
ASK_LINK = re.compile(r'<a href="(/q/ask/[^"]+)" id="consult-ask"')
ANSWER_TEMPLATE = "consult_answer"


def _masked(link: str) -> str:
    return re.sub(r"(/[dqr]/[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+", r"\1…", link)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def _delivered_link(journey: Any, patient: str, template: str | None) -> tuple[str, str]:
    from careloop.flows.models import OutboxMessage
    from careloop.flows.outbox import message_text

    seen = []
    with transaction(journey.engine) as session:
        query = select(OutboxMessage).where(OutboxMessage.patient_id == patient)
        if template:
            query = query.where(OutboxMessage.template_key == template)
        for message in session.scalars(query.order_by(OutboxMessage.id.desc())):
            seen.append(f"{message.template_key} {message.status}")
            if message.status in UNDELIVERED:
                continue
            found = PATIENT_LINK.findall(message_text(session, message)[1])
            if found:
                return found[0], message.template_key
    raise StepFailed(f"no delivered message with a patient link for {patient}"
                     + (f" (template {template})" if template else "") + "; messages: "
                     + (", ".join(seen) or "none"))


def do_patient_asks(journey: Any, options: dict[str, Any]) -> str:
    link, template = _delivered_link(journey, options["patient"], options.get("template"))
    page = journey.patient.get(urlsplit(link).path)
    entry = ASK_LINK.search(page.text)
    if page.status_code != 200 or entry is None:
        raise StepFailed(f"the link {_masked(link)} from {template} answered {page.status_code} "
                         f"without an ask link: {_text(page.text)[:300]}")
    form = journey.patient.get(entry.group(1))
    if form.status_code != 200 or 'id="consult-form"' not in form.text:
        raise StepFailed(f"the ask page answered {form.status_code}: {_text(form.text)[:300]}")
    lang = re.search(r'name="_lang" value="([^"]+)"', form.text)
    sent = journey.patient.post(entry.group(1), data={
        "desk": options["desk"], "question": options["question"],
        "_lang": lang.group(1) if lang else "zh-CN"}, follow_redirects=True)
    if sent.status_code != 200 or 'id="consult-asked"' not in sent.text:
        raise StepFailed(f"the question was refused ({sent.status_code}): "
                         f"{_text(sent.text)[:300]}")
    return f"asked {options['desk']} from {template} link {_masked(link)}"


def do_patient_reads_answer(journey: Any, options: dict[str, Any]) -> str:
    link, _ = _delivered_link(journey, options["patient"], ANSWER_TEMPLATE)
    page = journey.patient.get(urlsplit(link).path)
    if page.status_code != 200 or 'id="consult-answered-by"' not in page.text:
        raise StepFailed(f"the answer link {_masked(link)} answered {page.status_code} "
                         f"without an answer: {_text(page.text)[:300]}")
    missing = [text for text in options.get("contains") or [] if text not in page.text]
    if missing:
        raise StepFailed(f"the answer page does not show {missing}: {_text(page.text)[:300]}")
    kind = "absolute" if urlsplit(link).scheme else "relative"
    return f"read the answer through the {kind} link {_masked(link)}"


def check_patient_asks(checker: Any, path: tuple[str | int, ...],
                       options: dict[str, Any]) -> None:
    checker.ctx.reference("consult_desk", options["desk"], checker.doc, (*path, "desk"),
                          code="scenario.unknown-reference")
    if options.get("template"):
        checker.ctx.reference("template", options["template"], checker.doc,
                              (*path, "template"), code="scenario.unknown-reference")


def check_patient_reads_answer(checker: Any, path: tuple[str | int, ...],
                               options: dict[str, Any]) -> None:
    checker.ctx.reference("template", ANSWER_TEMPLATE, checker.doc, path,
                          code="scenario.unknown-reference")


def _label(options: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items() if k != "question")


def step_types() -> tuple[Any, ...]:
    from careloop.web.scenarios.spec import StepType

    return (StepType("patient_asks", check_patient_asks, do_patient_asks, _label),
            StepType("patient_reads_answer", check_patient_reads_answer,
                     do_patient_reads_answer, _label))
