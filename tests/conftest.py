"""Fixtures shared by every suite: media in a temporary folder, users with each role in a project."""
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import connections
from rest_framework.test import APIClient

from ssumweb.models import Membership, Project, Role


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def project(db):
    return Project.objects.create(name="Nanofab lab")


@pytest.fixture
def other_project(db):
    return Project.objects.create(name="Another lab")


def _member(project, username, role):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username)
    if role:
        Membership.objects.create(project=project, user=user, role=role)
    return user


@pytest.fixture
def viewer(project):
    return _member(project, "vera", Role.VIEWER)


@pytest.fixture
def operator(project):
    return _member(project, "otto", Role.OPERATOR)


@pytest.fixture
def lab_admin(project):
    return _member(project, "ada", Role.ADMIN)


@pytest.fixture
def outsider(project):
    return _member(project, "mallory", None)


def client_for(user):
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def api():
    return client_for


@pytest_asyncio.fixture
async def close_thread_connections():
    """Async tests reach the database from asgiref's thread-sensitive thread, which outlives the
    test; its connections (kept for CONN_MAX_AGE on PostgreSQL) would stop pytest-django from
    dropping the test database at the end."""
    yield
    await sync_to_async(connections.close_all)()
