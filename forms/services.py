"""Services other engines call by name (``registry.catalogue("service")``)."""

from __future__ import annotations

from careloop.engine.registry import Registry


def register(registry: Registry) -> None:
    from careloop.forms.compiler import field_keys
    from careloop.forms.fhir_responses import submit_fhir_response
    from careloop.forms.requests import create_request
    from careloop.forms.runtime import set_status

    services = registry.catalogue("service")
    services.register("forms.field_keys", field_keys)
    services.register("forms.create_request", create_request)
    services.register("submission.set_status", set_status)
    services.register("forms.submit_fhir_response", submit_fhir_response)
