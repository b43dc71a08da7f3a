"""What every API view shares: pagination, project scoping by role, and one error shape.

Errors always look like {"detail": "...", "code": "...", "errors": [{"field": ..., "message": ..., "code": ...}]}
so a client can put each message next to the control that caused it.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, status, viewsets
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from instruments.scan_plan import PlanError

from .access import for_user, require
from .errors import DomainError
from .models import Role


def _flatten(detail, prefix="") -> list[dict]:
    out = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if not prefix else f"{prefix}.{key}"
            if key == "non_field_errors":
                name = prefix or None
            out.extend(_flatten(value, name or ""))
    elif isinstance(detail, list):
        for i, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                out.extend(_flatten(value, f"{prefix}[{i}]" if prefix else str(i)))
            else:
                out.extend(_flatten(value, prefix))
    else:
        out.append({"field": prefix or None, "message": str(detail), "code": getattr(detail, "code", "invalid")})
    return out


def error_body(message: str, code: str, errors: list[dict] | None = None) -> dict:
    return {"detail": message, "code": code, "errors": errors or []}


def exception_handler(exc, context):
    if isinstance(exc, PlanError):
        return Response(error_body(exc.message, "invalid", [{"field": exc.field, "message": exc.message, "code": "invalid"}]),
                        status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DomainError):
        errors = [{"field": exc.field, "message": exc.message, "code": exc.code}]
        return Response(error_body(exc.message, exc.code, errors), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        summary = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors[:5])
        response.data = error_body(summary or "Invalid input.", "invalid", errors)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = error_body(str(detail), code)
    return response


def not_found(request, exception=None):
    """The 404 of a URL nothing answers: under /api/ in the API's error shape (JSON), else Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("Not found.", "not_found"), status=404)
    return page_not_found(request, exception)


def project_id_of(obj) -> int:
    """Follow the model's PROJECT_PATH ("scan__project") to the id of the project it belongs to."""
    parts = type(obj).PROJECT_PATH.split("__")
    for part in parts[:-1]:
        obj = getattr(obj, part)
    return getattr(obj, f"{parts[-1]}_id")


def get_visible(model, pk, user, field: str):
    """An object the user can see, or a 400 naming the field (never leaks other projects' objects);
    None for a None ``pk``."""
    if pk is None:
        return None
    obj = for_user(model.objects.all(), user, model.PROJECT_PATH).filter(pk=pk).first()
    if obj is None:
        raise DomainError(f"No {model._meta.verbose_name} with id {pk} in your projects.", field=field, code="does_not_exist")
    return obj


class ProjectScopedViewSet(viewsets.GenericViewSet):
    """Lists only what the user's projects hold; object actions check the role they need."""

    model = None  # set by subclasses
    ordering = ["-pk"]  # newest first unless ?ordering= says otherwise; pages stay stable

    def get_queryset(self):
        queryset = self.model.objects.all()
        if getattr(self, "swagger_fake_view", False):
            return queryset.none()
        return for_user(queryset, self.request.user, self.model.PROJECT_PATH)

    def require_role(self, obj, role: str = Role.OPERATOR) -> None:
        require(self.request.user, project_id_of(obj), role)

    def require_project_role(self, project_id: int, role: str = Role.OPERATOR) -> None:
        require(self.request.user, project_id, role)
