"""``careloop form …``: test answers against a form, import FHIR/REDCap, export FHIR."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from careloop.engine.errors import DefinitionInvalid
from careloop.engine.i18n import t
from careloop.forms.fhir import export_questionnaire, import_questionnaire, read_response
from careloop.forms.logic import evaluate
from careloop.forms.redcap import DictionaryInvalid, import_instruments
from careloop.forms.spec import FormSpec
from careloop.forms.testing import form_from_yaml


@click.group(help="Forms: test answers, import FHIR / REDCap, export FHIR.")
def form() -> None:
    pass


def _load(path: Path) -> FormSpec:
    try:
        return form_from_yaml(path.read_text("utf-8"), str(path))
    except DefinitionInvalid as exc:
        for problem in exc.problems:
            click.echo(problem.render(), err=True)
        raise SystemExit(1) from None


def _dump_yaml(body: dict[str, Any], notes: list[str]) -> str:
    head = "".join(f"# not translated: {note}\n" for note in notes)
    return head + yaml.safe_dump(body, allow_unicode=True, sort_keys=False, width=100)


@form.command("test")
@click.argument("form_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--answers", "answers_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Answers JSON, or a FHIR QuestionnaireResponse.")
@click.option("--locale", default="zh-CN", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def form_test(form_file: Path, answers_file: Path, locale: str, fmt: str) -> None:
    """Check answers against a form without storing anything (exit 1 if invalid)."""
    spec = _load(form_file)
    data = json.loads(answers_file.read_text("utf-8"))
    warnings: list[str] = []
    reported: dict[str, Any] = {}
    if isinstance(data, dict) and data.get("resourceType") == "QuestionnaireResponse":
        data, reported = read_response(spec, data)
    result = evaluate(spec, data if isinstance(data, dict) else {}, locale=locale)
    for score_key, value in reported.items():
        computed = result.scores.get(score_key)
        try:
            same = computed is not None and abs(float(value) - float(computed)) < 1e-9
        except (TypeError, ValueError):
            same = False
        if computed is None:
            # never "valid" for a value the server did not compute
            result.valid = False
            result.errors.append({"path": score_key, "code": "forms.score_not_computed",
                                  "message": t("forms.score_not_computed", locale,
                                               reported=value)})
        elif not same:
            warnings.append(t("forms.cli.total_mismatch", locale, reported=value,
                              computed=computed))
    total_key = spec.meta.get("total_score")
    out = {**result.to_json(), "warnings": warnings}
    if total_key and total_key in reported:
        out["reported_total"] = reported[total_key]
    if reported:
        out["reported_scores"] = reported
    if fmt == "json":
        click.echo(json.dumps(out, ensure_ascii=False))
    else:
        click.echo(t("forms.cli.valid" if result.valid else "forms.cli.invalid", locale))
        for error in result.errors:
            click.echo(f"  {error['path']}: {error['message']} ({error['code']})")
        click.echo("visible: " + ", ".join(result.visible))
        for key, value in result.scores.items():
            band = result.bands.get(key)
            click.echo(f"score {key} = {value}" + (f" [{band}]" if band else ""))
        for warning in warnings:
            click.echo(f"warning: {warning}")
    if not result.valid:
        sys.exit(1)


@form.command("import-fhir")
@click.argument("questionnaire", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", default=None, help="Form key (default: from the Questionnaire name).")
def import_fhir(questionnaire: Path, output: Path, key: str | None) -> None:
    """Turn a FHIR R4 Questionnaire (JSON, or a Bundle holding one and its value sets) into a
    form definition (YAML).

    Exits 1 when something was not carried: the form is written, but each refused item is an
    ``import.unresolved`` entry that blocks publishing until resolved.
    """
    try:
        data = json.loads(questionnaire.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        click.echo(f"{questionnaire}: not JSON: {exc}", err=True)
        raise SystemExit(1) from None
    bundle: list[Mapping[str, Any]] = []
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        bundle = [e.get("resource", {}) for e in data.get("entry", []) or []]
        found = [r for r in bundle if r.get("resourceType") == "Questionnaire"]
        if len(found) != 1:
            click.echo(f"{questionnaire}: the Bundle holds {len(found)} Questionnaires; one is "
                       "needed", err=True)
            raise SystemExit(1)
        data = found[0]
    if not isinstance(data, dict) or data.get("resourceType") != "Questionnaire":
        click.echo(f"{questionnaire}: not a FHIR Questionnaire (resourceType)", err=True)
        raise SystemExit(1)
    body, notes = import_questionnaire(data, key, bundle=bundle)
    output.write_text(_dump_yaml(body, notes), "utf-8")
    for note in notes:
        click.echo(f"{questionnaire}:{note}", err=True)
    refused = len(body["import"]["unresolved"])
    click.echo(f"wrote {output} ({len(body['fields'])} fields, {refused} not carried)")
    if refused:
        click.echo(f"{refused} item{'s' if refused != 1 else ''} not carried: listed under "
                   "import.unresolved; the form does not publish until they are resolved",
                   err=True)
        raise SystemExit(1)


@form.command("import-redcap")
@click.argument("dictionary", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="A .yaml file for a one-instrument dictionary, else a folder (one form per "
                   "instrument).")
@click.option("--key", default=None, help="Form key (one instrument) or key prefix (several).")
@click.option("--title", default=None)
def import_redcap(dictionary: Path, output: Path, key: str | None, title: str | None) -> None:
    """Turn a REDCap data dictionary (CSV) into form definitions (YAML), one per instrument.

    Exits 1 when something was not carried: the forms are written, but each refused item is an
    ``import.unresolved`` entry that blocks publishing until resolved.
    """
    try:
        instruments = import_instruments(dictionary.read_text("utf-8"))
    except DictionaryInvalid as exc:
        for problem in exc.problems:
            click.echo(f"{dictionary}:{problem}", err=True)
        click.echo(f"{dictionary}: not a REDCap data dictionary; nothing written", err=True)
        raise SystemExit(1) from None
    single = len(instruments) == 1 and output.suffix in (".yaml", ".yml")
    if not single:
        output.mkdir(parents=True, exist_ok=True)
    refused = 0
    for instrument in instruments:
        body = instrument.body
        if key:
            body["key"] = key if single else f"{key}_{body['key']}"[:64]
        if title and single:
            body["title"] = {"zh-CN": title, "en": title}
        target = output if single else output / f"{body['key']}.yaml"
        notes = [str(n) for n in instrument.notes]
        target.write_text(_dump_yaml(body, notes), "utf-8")
        for note in instrument.notes:
            click.echo(f"{dictionary}:{note}", err=True)
        refused += len(instrument.refused)
        click.echo(f"wrote {target} ({len(body['fields'])} fields, "
                   f"{len(instrument.refused)} not carried)")
    if refused:
        click.echo(f"{refused} item{'s' if refused != 1 else ''} not carried: listed under "
                   "import.unresolved; the forms do not publish until they are resolved",
                   err=True)
        raise SystemExit(1)


@form.command("export-fhir")
@click.argument("form_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--locale", default="zh-CN", show_default=True)
def export_fhir(form_file: Path, output: Path | None, locale: str) -> None:
    """Export a form definition as a FHIR R4 Questionnaire (JSON)."""
    text = json.dumps(export_questionnaire(_load(form_file), locale=locale), ensure_ascii=False,
                      indent=2)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", "utf-8")
        click.echo(f"wrote {output}")
