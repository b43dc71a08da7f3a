"""Projects and their members. Anyone may create a project (and becomes its admin); admins manage members."""
from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action, api_view
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from .access import require, visible_projects
from .errors import DomainError
from .models import DemoRun, Membership, Role
from .serializers import MemberRoleSerializer, MembershipSerializer, ProjectSerializer


class ProjectViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                     mixins.UpdateModelMixin, viewsets.GenericViewSet):
    serializer_class = ProjectSerializer
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return visible_projects(self.request.user).order_by("name")

    def perform_create(self, serializer):
        with transaction.atomic():
            project = serializer.save()
            Membership.objects.create(project=project, user=self.request.user, role=Role.ADMIN)

    def perform_update(self, serializer):
        require(self.request.user, serializer.instance.pk, Role.ADMIN)
        serializer.save()

    @extend_schema(request=MembershipSerializer, responses=MembershipSerializer(many=True))
    @action(detail=True, methods=["get", "post"], serializer_class=MembershipSerializer)
    def members(self, request, pk=None):
        project = self.get_object()
        if request.method == "POST":
            require(request.user, project.pk, Role.ADMIN)
            serializer = MembershipSerializer(data=request.data, context={"request": request})
            serializer.is_valid(raise_exception=True)
            user = serializer.validated_data["user"]
            if Membership.objects.filter(project=project, user=user).exists():
                raise DomainError(f"{user.username} is already a member.", field="username", code="unique")
            Membership.objects.create(project=project, user=user, role=serializer.validated_data["role"])
        memberships = Membership.objects.filter(project=project).select_related("user")
        return Response(MembershipSerializer(memberships, many=True).data,
                        status=status.HTTP_201_CREATED if request.method == "POST" else status.HTTP_200_OK)

    @extend_schema(request=MemberRoleSerializer, responses=MembershipSerializer)
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<username>[\w.@+-]+)",
            serializer_class=MemberRoleSerializer)
    def member(self, request, pk=None, username=None):
        project = self.get_object()
        require(request.user, project.pk, Role.ADMIN)
        membership = Membership.objects.filter(project=project, user__username=username).first()
        if membership is None:
            raise DomainError(f"{username} is not a member of this project.", field="username", code="not_found")
        admins = Membership.objects.filter(project=project, role=Role.ADMIN)
        last_admin = membership.role == Role.ADMIN and admins.count() == 1
        if request.method == "DELETE":
            if last_admin:
                raise DomainError("A project needs at least one admin.", field="username")
            membership.delete()
            return Response(status=status.HTTP_204_NO_CONTENT)
        serializer = MemberRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if last_admin and serializer.validated_data["role"] != Role.ADMIN:
            raise DomainError("A project needs at least one admin.", field="role")
        membership.role = serializer.validated_data["role"]
        membership.save(update_fields=["role"])
        return Response(MembershipSerializer(membership).data)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)


@extend_schema(request=None, responses=TokenSerializer)
@api_view(["POST"])
def token(request):
    """The caller's API token for scripts (created on first use); send it as `Authorization: Token <key>`."""
    key, _ = Token.objects.get_or_create(user=request.user)
    return Response({"token": key.key})


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    is_superuser = serializers.BooleanField()
    projects = serializers.DictField(child=serializers.CharField())


@extend_schema(responses=MeSerializer)
@api_view(["GET"])
def me(request):
    roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
    return Response({"username": request.user.username, "is_superuser": request.user.is_superuser,
                     "projects": {str(k): v for k, v in roles.items()}})


class DemoStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    status = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    url = serializers.CharField(allow_blank=True)


class DemoRunSerializer(serializers.ModelSerializer):
    steps = DemoStepSerializer(many=True, read_only=True)
    status_url = serializers.SerializerMethodField()

    class Meta:
        model = DemoRun
        fields = ["id", "project", "status", "progress", "message", "failure_reason", "steps", "status_url",
                  "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_status_url(self, demo) -> str:
        return reverse("api:demorun-detail", args=[demo.pk])


class DemoStartSerializer(serializers.Serializer):
    project = serializers.IntegerField()


class DemoRunViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Runs of the first-run demo: start one with POST /api/demo/run/ {project}."""

    serializer_class = DemoRunSerializer
    filterset_fields = ["project", "status"]

    def get_queryset(self):
        from .access import for_user

        if getattr(self, "swagger_fake_view", False):
            return DemoRun.objects.none()
        return for_user(DemoRun.objects.all(), self.request.user, "project").order_by("-pk")

    @extend_schema(request=DemoStartSerializer, responses={201: DemoRunSerializer})
    @action(detail=False, methods=["post"])
    def run(self, request):
        from .demo import start_demo

        data = DemoStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = visible_projects(request.user).filter(pk=data.validated_data["project"]).first()
        if project is None:
            raise DomainError(f"No project with id {data.validated_data['project']} among yours.", field="project",
                              code="does_not_exist")
        require(request.user, project.pk, Role.OPERATOR)
        demo = start_demo(project, request.user)
        return Response(DemoRunSerializer(demo).data, status=status.HTTP_201_CREATED)


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema (YAML, or JSON when asked); a refusal in the API's JSON error shape.

    DRF renders an error with the renderer the request negotiated, so an anonymous request for
    the schema would get its 401 as YAML, which no client reads as an error.
    """

    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
