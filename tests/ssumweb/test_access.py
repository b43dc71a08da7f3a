import pytest
from django.http import Http404
from rest_framework.exceptions import PermissionDenied

from imaging.models import Sample
from ssumweb.access import for_user, has_role, require, role_in
from ssumweb.models import Role


@pytest.mark.django_db
def test_roles_rank_viewer_operator_admin(project, viewer, operator, lab_admin, outsider):
    assert role_in(viewer, project.pk) == Role.VIEWER
    assert has_role(operator, project.pk, Role.VIEWER)
    assert has_role(operator, project.pk, Role.OPERATOR)
    assert not has_role(operator, project.pk, Role.ADMIN)
    assert has_role(lab_admin, project.pk, Role.ADMIN)
    assert role_in(outsider, project.pk) is None


@pytest.mark.django_db
def test_non_members_get_404_and_low_roles_403(project, viewer, outsider):
    with pytest.raises(Http404):
        require(outsider, project.pk, Role.VIEWER)
    with pytest.raises(PermissionDenied):
        require(viewer, project.pk, Role.OPERATOR)
    require(viewer, project.pk, Role.VIEWER)


@pytest.mark.django_db
def test_querysets_are_narrowed_to_the_users_projects(project, other_project, viewer):
    mine = Sample.objects.create(project=project, name="chip A")
    Sample.objects.create(project=other_project, name="chip B")
    assert list(for_user(Sample.objects.all(), viewer)) == [mine]
