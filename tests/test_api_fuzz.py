"""Property-based run of schemathesis against our own OpenAPI schema, as an operator: no 5xx, ever."""
import json

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from imaging.models import Sample
from imaging.services import plan_scan
from instruments.models import Instrument


def _load_schema():
    raw = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.app = get_wsgi_application()
    return loaded


schema = _load_schema()


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes the connection after each request; the test's transaction needs it open
    (Django's own test client does the same)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def operator_token(project, operator, keep_test_connection):
    instrument = Instrument.objects.create(project=project, name="sim")
    sample = Sample.objects.create(project=project, name="chip")
    plan_scan(sample=sample, name="s", instrument=instrument, user=operator, plan=dict(
        origin_x_nm=1000, origin_y_nm=1000, size_x_nm=5000, size_y_nm=5000, overlap=0.3, exposure_ms=10,
        contact_setpoint_nm=20))
    return Token.objects.create(user=operator).key


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=4, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case, operator_token):
    case.call_and_validate(headers={"Authorization": f"Token {operator_token}"}, checks=[not_a_server_error])
