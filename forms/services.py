"""Services other engines call by name (``registry.catalogue("service")``)."""

from __future__ import annotations

from careloop.engine.registry import Registry
from careloop.engine.services import (
    CREATE_REQUEST,
    FIELD_KEYS,
    SET_SUBMISSION_STATUS,
    SUBMIT_FHIR_RESPONSE,
    register_service,
)


def register(registry: Registry) -> None:
    from careloop.forms.compiler import field_keys
    from careloop.forms.fhir_responses import submit_fhir_response
    from careloop.forms.requests import create_request
    from careloop.forms.runtime import set_status

    register_service(registry, FIELD_KEYS, field_keys)
    register_service(registry, CREATE_REQUEST, create_request)
    register_service(registry, SET_SUBMISSION_STATUS, set_status)
    register_service(registry, SUBMIT_FHIR_RESPONSE, submit_fhir_response)
