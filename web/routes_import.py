"""The patient import page (``/admin/import``): upload → column mapping (pre-filled) → dry-run
report → apply → result. The uploaded file, the report and the progress are rows
(``import_jobs``), so the page any process serves shows the same progress; the apply runs after
the response (:func:`careloop.flows.inbound.patients_import.run_job`)."""

from __future__ import annotations

from typing import Any

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    File,
    Form,
    HTTPException,
    Path,
    Request,
    UploadFile,
)
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from careloop.engine.db import default_engine, transaction
from careloop.flows.inbound import patients_import as pi
from careloop.flows.inbound.models import ImportJob
from careloop.web.deps import locale_of, record, require
from careloop.web.permissions import BUNDLE_IMPORT, MAX_ID, Principal
from careloop.web.render import render

router = APIRouter(prefix="/admin", include_in_schema=False)
NEEDS_BUNDLE_IMPORT = Depends(require(BUNDLE_IMPORT))
UPLOAD = File()


def _index(request: Request, error: str | None = None, status: int = 200) -> Response:
    with transaction() as session:
        jobs = [{"id": j.id, "filename": j.filename, "source": j.source, "status": j.status,
                 "rows": j.total_rows, "at": j.created_at, "by": j.created_by or ""}
                for j in session.scalars(select(ImportJob).order_by(ImportJob.id.desc())
                                         .limit(20)).all()]
    return render(request, "hisdata/import_index.html", status_code=status, jobs=jobs,
                  error=error)


@router.get("/import")
def import_index(request: Request, me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    return _index(request)


@router.post("/import")
def import_upload(request: Request, file: UploadFile = UPLOAD,
                  source: str = Form("default", max_length=200),
                  me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Store the uploaded file as a job (nothing imported yet)."""
    from careloop.engine.i18n import t

    locale = locale_of(request)
    source = source.strip()
    if not 1 <= len(source) <= 64:
        return _index(request, t("hisdata.import.error.source", locale), 422)
    data = file.file.read(pi.MAX_BYTES + 1)
    if not data or not file.filename:
        return _index(request, t("hisdata.import.error.no_file", locale), 422)
    try:
        with transaction() as session:
            job = pi.create_job(session, source, file.filename, data, me.username)
            record(request, me, "patients.import_upload", session=session,
                   object_type="import_job", object_id=str(job.id))
            job_id = job.id
    except pi.ImportFileError as exc:
        return _index(request, t("hisdata.import.error.file", locale,
                                 message=exc.text(locale)), 422)
    return RedirectResponse(f"/admin/import/{job_id}", status_code=303)


def _job_page(request: Request, job_id: int, problems: list[dict[str, Any]] | None = None,
              status: int = 200) -> Response:
    locale = locale_of(request)
    with transaction() as session:
        job = session.get(ImportJob, job_id)
        if job is None:
            raise HTTPException(status_code=404)
        view = {"id": job.id, "filename": job.filename, "source": job.source,
                "status": job.status, "headers": job.headers, "mapping": job.mapping,
                "total": job.total_rows, "done": job.done_rows, "report": job.report}
        report: dict[str, Any] = dict(job.report)
    rejected = [{**r, "reason": pi.reason_text(r, locale)} for r in report.get("rejected", [])]
    shown = [pi.mapping_problem_text(p, locale) for p in problems or []]
    return render(request, "hisdata/import_job.html", status_code=status, job=view,
                  fields=list(pi.FIELDS), required=pi.REQUIRED, rejected=rejected,
                  problems=shown, field_label=lambda name: pi.field_label(name, locale))


@router.get("/import/{job_id}")
def import_job(request: Request, job_id: int = Path(ge=1, le=MAX_ID),
               me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    return _job_page(request, job_id)


MAP = {name: Form("", alias=f"map.{name}", max_length=200) for name in pi.FIELDS}


@router.post("/import/{job_id}/check")
def import_check(request: Request, job_id: int = Path(ge=1, le=MAX_ID),
                 patient_id: str = MAP["patient_id"], mrn: str = MAP["mrn"],
                 name: str = MAP["name"], id_number: str = MAP["id_number"],
                 phone: str = MAP["phone"], gender: str = MAP["gender"],
                 birth_date: str = MAP["birth_date"], department: str = MAP["department"],
                 discharge_date: str = MAP["discharge_date"],
                 me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """The dry run with the mapping of the form (``map.<field>`` = a column header)."""
    mapping = {"patient_id": patient_id, "mrn": mrn, "name": name, "id_number": id_number,
               "phone": phone, "gender": gender, "birth_date": birth_date,
               "department": department, "discharge_date": discharge_date}
    return _check(request, me, job_id, mapping)


def _check(request: Request, me: Principal, job_id: int, mapping: dict[str, str]) -> Response:
    with transaction() as session:
        job = session.get(ImportJob, job_id)
        if job is None:
            raise HTTPException(status_code=404)
        if job.status not in ("uploaded", "checked"):
            raise HTTPException(status_code=409)
        problems = pi.check_job(session, job, mapping, me.username)
        if not problems:
            record(request, me, "patients.import_check", session=session,
                   object_type="import_job", object_id=str(job_id))
    if problems:
        return _job_page(request, job_id, problems, 422)
    return RedirectResponse(f"/admin/import/{job_id}", status_code=303)


@router.post("/import/{job_id}/apply")
def import_apply(request: Request, background: BackgroundTasks,
                 job_id: int = Path(ge=1, le=MAX_ID),
                 me: Principal = NEEDS_BUNDLE_IMPORT) -> Response:
    """Start the apply (once); the page then shows its progress from the database."""
    with transaction() as session:
        if session.get(ImportJob, job_id) is None:
            raise HTTPException(status_code=404)
        if not pi.start_apply(session, job_id):
            raise HTTPException(status_code=409)
        record(request, me, "patients.import_apply", session=session,
               object_type="import_job", object_id=str(job_id))
    background.add_task(pi.run_job, default_engine(), job_id)
    return RedirectResponse(f"/admin/import/{job_id}", status_code=303)


@router.get("/import/{job_id}/progress")
def import_progress(job_id: int = Path(ge=1, le=MAX_ID),
                    me: Principal = NEEDS_BUNDLE_IMPORT) -> dict[str, Any]:
    """``{"status": "applying", "done": 1500, "total": 9500}`` for the progress bar."""
    with transaction() as session:
        job = session.get(ImportJob, job_id)
        if job is None:
            raise HTTPException(status_code=404)
        return {"status": job.status, "done": job.done_rows, "total": job.total_rows}
