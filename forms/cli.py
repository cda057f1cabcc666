"""``careloop form …``: test answers against a form, import FHIR/REDCap, export FHIR."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from careloop.engine.errors import DefinitionInvalid
from careloop.engine.i18n import t
from careloop.forms.fhir import answers_from_response, export_questionnaire, import_questionnaire
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
    reported = None
    if isinstance(data, dict) and data.get("resourceType") == "QuestionnaireResponse":
        data, reported = answers_from_response(spec, data, spec.meta.get("total_link_id"))
    result = evaluate(spec, data if isinstance(data, dict) else {}, locale=locale)
    total_key = spec.meta.get("total_score")
    if reported is not None and total_key:
        computed = result.scores.get(total_key)
        if computed is None or float(reported) != float(computed):
            warnings.append(t("forms.cli.total_mismatch", locale, reported=reported,
                              computed=computed))
    out = {**result.to_json(), "warnings": warnings}
    if reported is not None:
        out["reported_total"] = reported
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
    """Turn a FHIR R4 Questionnaire (JSON) into a form definition (YAML)."""
    body, notes = import_questionnaire(json.loads(questionnaire.read_text("utf-8")), key)
    output.write_text(_dump_yaml(body, notes), "utf-8")
    for note in notes:
        click.echo(f"not translated: {note}", err=True)
    click.echo(f"wrote {output} ({len(body['fields'])} fields)")


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
