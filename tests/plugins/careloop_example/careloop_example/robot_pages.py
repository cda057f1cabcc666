"""Translations, a route and a template of its own: the page the phone robot's text message links
to, telling a patient who just called them and how to reach a person (no patient data on it).

What a plugin writes to add pages (docs/architecture.md, "Adding translations, routes,
templates"): an ``APIRouter`` (the ``routers`` hook), a template folder (``template_dirs``; name
the templates under a folder of the package's name so they never shadow the web app's), and i18n
catalogues (``translation_dirs``; keys prefixed with the package's name).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from careloop.engine.hookspecs import hookimpl

router = APIRouter()


@router.get("/robot/about", response_class=HTMLResponse)
def about_the_robot(request: Request) -> HTMLResponse:
    from careloop.engine.hospital import hospital_name, hospital_phone
    from careloop.web.deps import locale_of
    from careloop.web.render import render

    return render(request, "careloop_example/robot_about.html",
                  hospital=hospital_name(locale_of(request)), phone=hospital_phone())


@hookimpl
def routers() -> list[APIRouter]:
    return [router]


@hookimpl
def template_dirs() -> list[str]:
    return ["careloop_example:templates"]


@hookimpl
def translation_dirs() -> list[str]:
    return ["careloop_example:data/i18n"]
