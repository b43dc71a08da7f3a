"""Who may do what: every object belongs to a project, and a member's role sets what they may do.

Non-members get 404 (the object does not exist for them); members below the needed role get 403.
"""
from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404
from rest_framework.exceptions import PermissionDenied

from .models import ROLE_RANK, Membership, Project, Role


def role_in(user, project_id: int) -> str | None:
    if not user or not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    cache = getattr(user, "_ssumweb_roles", None)
    if cache is None:
        cache = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
        user._ssumweb_roles = cache
    return cache.get(project_id)


def has_role(user, project_id: int, needed: str) -> bool:
    role = role_in(user, project_id)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[needed]


def visible_projects(user) -> QuerySet[Project]:
    if not user or not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def for_user(queryset: QuerySet, user, project_path: str = "project") -> QuerySet:
    """Narrow a queryset to the objects in projects the user belongs to."""
    if user.is_superuser:
        return queryset
    prefix = f"{project_path}__" if project_path else ""  # "" when the queryset holds projects themselves
    return queryset.filter(**{f"{prefix}memberships__user": user}).distinct()


def require(user, project_id: int, needed: str = Role.VIEWER) -> None:
    role = role_in(user, project_id)
    if role is None:
        raise Http404("No such object.")
    if ROLE_RANK[role] < ROLE_RANK[needed]:
        raise PermissionDenied(f"This needs the {needed} role in the project; you are {role}.")
