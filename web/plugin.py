"""Registers the web runtime: CLI commands, navigation, patient resolvers, demo seeders."""

from __future__ import annotations

import importlib
from typing import Any

from careloop.engine.hookspecs import hookimpl
from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    from careloop.web import permissions as p
    from careloop.web.cli import demo, serve, up, user, worker
    from careloop.web.demo import seed_complaint_handling, seed_domain
    from careloop.web.render import NavItem
    from careloop.web.scoping import register_resolvers

    cli = registry.catalogue("cli")
    for name, command in (("serve", serve), ("worker", worker), ("up", up), ("user", user),
                          ("demo", demo)):
        cli.register(name, command)
    nav = registry.catalogue("web_nav")
    # Engines add theirs: submissions (20), complaints (30), flow runs (40), dashboards (50),
    # outbox (admin 60), incidents (admin 70).
    for name, item in (
        ("home", NavItem("web.nav.home", "/", None, 0)),
        ("inbox", NavItem("web.nav.inbox", "/inbox", p.TASK_WORK, 10)),
        ("patients", NavItem("web.nav.patients", "/patients", p.PATIENT_VIEW, 15)),
        ("complaints", NavItem("web.nav.complaints", "/complaints", p.PATIENT_VIEW, 30)),
        ("alerts", NavItem("web.nav.alerts", "/alerts", p.PATIENT_VIEW, 20)),
        ("dashboards", NavItem("web.nav.dashboards", "/dashboards", p.REPORTS_VIEW, 50)),
        ("definitions", NavItem("web.nav.definitions", "/definitions", p.DEFINITIONS_VIEW, 80)),
        ("builder", NavItem("builder.title", "/builder", p.BUILDER_EDIT, 85)),
        ("touchpoints", NavItem("tp.sheet.title", "/touchpoints", p.DEFINITIONS_VIEW, 82)),
        ("flow_ops", NavItem("web.nav.flow_ops", "/admin/flows", p.BUNDLE_IMPORT, 60, "admin")),
        ("outbound", NavItem("govern.nav", "/admin/outbound", p.BUNDLE_IMPORT, 67, "admin")),
        ("delivery", NavItem("delivery.nav", "/admin/delivery", p.BUNDLE_IMPORT, 62, "admin")),
        ("integration", NavItem("web.nav.integration", "/admin/integration", p.BUNDLE_IMPORT,
                                65, "admin")),
        ("patient_import", NavItem("hisdata.import.nav", "/admin/import", p.BUNDLE_IMPORT,
                                   66, "admin")),
        ("users", NavItem("web.nav.users", "/admin/users", p.ADMIN_USERS, 10, "admin")),
        ("roles", NavItem("web.nav.roles", "/admin/roles", p.ADMIN_USERS, 15, "admin")),
        ("api_keys", NavItem("web.sod.api_keys_title", "/admin/api-keys", p.ADMIN_USERS, 16,
                             "admin")),
        ("break_glass", NavItem("web.sod.break_glass_title", "/admin/break-glass",
                                p.ADMIN_USERS, 17, "admin")),
        ("departments", NavItem("web.nav.departments", "/admin/departments",
                                p.ADMIN_DEPARTMENTS, 20, "admin")),
        ("bundles", NavItem("web.nav.bundles", "/admin/bundles", p.BUNDLE_IMPORT, 30, "admin")),
        ("audit", NavItem("web.nav.audit", "/admin/audit", p.AUDIT_VIEW, 90, "admin")),
    ):
        nav.register(name, item)
    register_resolvers(registry)
    from careloop.web import patient360

    patient360.register(registry)
    from careloop.web import routes_wechat

    routes_wechat.register(registry)
    from careloop.web import routes_results

    routes_results.register(registry)
    from careloop.web import routes_consult

    routes_consult.register(registry)
    from careloop.web import routes_people

    routes_people.register(registry)
    from careloop.web import routes_education

    routes_education.register(registry)
    from careloop.web import routes_health

    routes_health.register(registry)
    from careloop.web import routes_calls

    routes_calls.register(registry)
    from careloop.web.health import heartbeat

    registry.catalogue("tick").register("web.heartbeat", heartbeat)
    registry.catalogue("demo_seeder").register("domain", seed_domain)
    registry.catalogue("demo_seeder").register("complaint_handling", seed_complaint_handling)
    from careloop.web import scenarios

    scenarios.register(registry)

# Storage and text, through the same hooks an extension uses (engine/hookspecs.py).
@hookimpl
def model_modules() -> list[str]:
    return ["careloop.web.models", "careloop.web.builder_models"]


@hookimpl
def migration_locations() -> list[str]:
    return ["careloop.web:migrations"]


@hookimpl
def translation_dirs() -> list[str]:
    return ["careloop.web:data/i18n"]


# The web runtime's own routers, then each engine's pages (web/routes_<engine>.py).
WEB_ROUTE_MODULES = (
    "careloop.web.routes_auth",
    "careloop.web.routes_console",
    "careloop.web.routes_admin",
    "careloop.web.routes_api",
    "careloop.web.routes_alerts",
    "careloop.web.routes_outbound",
    "careloop.web.routes_outbox",
    "careloop.web.routes_import",
)
ROUTE_MODULES = (
    "careloop.web.routes_forms",
    "careloop.web.routes_touchpoints",
    "careloop.web.routes_rules",
    "careloop.web.routes_flows",
    "careloop.web.routes_reports",
    "careloop.web.routes_builder",
    "careloop.web.routes_builder_copy",
    "careloop.web.routes_builder_try",
    "careloop.web.routes_documents",
    "careloop.web.routes_fhir",
    "careloop.web.routes_wechat",
    "careloop.web.routes_hl7",
    "careloop.web.routes_results",
    "careloop.web.routes_consult",
    "careloop.web.routes_people",
    "careloop.web.routes_education",
    "careloop.web.routes_health",
    "careloop.web.routes_calls",
    "careloop.web.routes_summary",
    "careloop.web.routes_monthly",
    # last: the generic /channels/<type>/<hook> callbacks, after routes of a channel's own
    "careloop.web.routes_channels",
)


@hookimpl
def routers() -> list[Any]:
    return [importlib.import_module(name).router for name in WEB_ROUTE_MODULES + ROUTE_MODULES]


@hookimpl
def template_dirs() -> list[str]:
    return ["careloop.web:templates"]


@hookimpl
def static_dirs() -> list[tuple[str, str, str]]:
    return [("/static", "careloop.web", "static")]
