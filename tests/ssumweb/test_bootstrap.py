"""`manage.py bootstrap`: the first admin with a one-time password, and the demo project, once."""
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from imaging.models import Sample, SampleSurface
from instruments.models import Instrument
from ssumweb.models import Membership, Project, Role

pytestmark = pytest.mark.django_db


def bootstrap(*args) -> str:
    out = StringIO()
    call_command("bootstrap", *args, stdout=out)
    return out.getvalue()


def test_first_run_creates_the_admin_and_a_demo_project_with_a_chip_and_bare_silicon():
    first = bootstrap()
    password = first.split("Password: ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    project = Project.objects.get(name="Demo lab")
    assert Membership.objects.get(project=project, user=admin).role == Role.ADMIN
    assert Instrument.objects.filter(project=project, name="Simulated SSUM").count() == 1
    samples = {s.name: s.surface for s in Sample.objects.filter(project=project)}
    assert samples == {"Synthetic IC chip": SampleSurface.CHIP, "Bare silicon wafer": SampleSurface.BARE_SILICON}
    # a second run creates nothing and shows no password
    again = bootstrap()
    assert "Password" not in again and "Log in as admin" in again
    assert Sample.objects.count() == 2 and get_user_model().objects.count() == 1


def test_no_demo_creates_only_the_admin():
    bootstrap("--no-demo", "--username", "lab")
    assert get_user_model().objects.get().username == "lab"
    assert not Project.objects.exists()
