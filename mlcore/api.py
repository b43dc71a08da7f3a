"""Training runs, trained models and translations over the API."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from imaging.api import JobActionsMixin
from imaging.models import Mosaic, PairSet, Registration
from imaging.tiles import serve_pyramid
from ssumweb.access import require, visible_projects
from ssumweb.api import ProjectScopedViewSet, get_visible, project_id_of
from ssumweb.errors import DomainError
from ssumweb.media import send_file
from ssumweb.models import Role

from . import serializers as s
from . import services
from .models import TrainedModel, TrainingRun, Translation


class TrainingRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, JobActionsMixin, ProjectScopedViewSet):
    model = TrainingRun
    serializer_class = s.TrainingRunSerializer
    filterset_fields = ["project", "status"]
    search_fields = ["name"]
    ordering_fields = ["created_at", "name"]

    @extend_schema(request=s.TrainingRunCreateSerializer, responses={201: s.TrainingRunSerializer})
    def create(self, request):
        data = s.TrainingRunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project_id = data.validated_data["project"]
        if not visible_projects(request.user).filter(pk=project_id).exists():  # another's reads as none
            raise DomainError(f"No project with id {project_id} among yours.", field="project", code="does_not_exist")
        require(request.user, project_id, Role.OPERATOR)
        registrations = [get_visible(Registration, pk, request.user, "registrations")
                         for pk in dict.fromkeys(data.validated_data["registrations"])]
        for registration in registrations:
            if project_id_of(registration) != project_id:
                raise DomainError(f"Registration {registration.pk} belongs to another project.", field="registrations")
        pair_sets = [get_visible(PairSet, pk, request.user, "pair_sets")
                     for pk in dict.fromkeys(data.validated_data["pair_sets"])]
        settings = s.TrainingSettingsSerializer(data=request.data.get("config") or {})
        settings.is_valid(raise_exception=True)
        run = services.queue_training(project_id=project_id, name=data.validated_data["name"],
                                      registrations=registrations, pair_sets=pair_sets,
                                      settings=settings.validated_data, user=request.user)
        return Response(self.get_serializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Continue a failed or cancelled run from its last checkpoint."""
        run = self.get_object()
        self.require_role(run, Role.OPERATOR)
        services.resume_training(run)
        run.refresh_from_db()
        return Response(self.get_serializer(run).data)

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"samples/(?P<index>\d+)")
    def sample(self, request, pk=None, index=None):
        run = self.get_object()
        index = int(index)
        if index >= len(run.samples):
            raise NotFound(f"Training run {run.pk} has no sample image {index} (it has {len(run.samples)}).")
        # revalidated (ETag), not immutable: a resumed run makes sample ``index`` again after its checkpoint
        return send_file(request, run.samples[index], content_type="image/png")


class TrainedModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    model = TrainedModel
    serializer_class = s.TrainedModelSerializer
    filterset_fields = ["project"]
    search_fields = ["name"]
    ordering_fields = ["created_at", "name"]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def weights(self, request, pk=None):
        model = self.get_object()
        return send_file(request, model.weights.name, content_type="application/octet-stream",
                         download_name=f"ssumweb-model{model.pk}.pt")


class TranslationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, JobActionsMixin, ProjectScopedViewSet):
    model = Translation
    serializer_class = s.TranslationSerializer
    filterset_fields = ["mosaic", "model", "status", "live"]
    ordering_fields = ["created_at"]

    @extend_schema(request=s.TranslationCreateSerializer, responses={201: s.TranslationSerializer})
    def create(self, request):
        data = s.TranslationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        mosaic = get_visible(Mosaic, data.validated_data["mosaic"], request.user, "mosaic")
        model = get_visible(TrainedModel, data.validated_data["model"], request.user, "model")
        require(request.user, project_id_of(mosaic), Role.OPERATOR)
        if model.project_id != project_id_of(mosaic):
            raise DomainError("The model belongs to another project.", field="model")
        translation = services.queue_translation(mosaic, model, user=request.user)
        return Response(self.get_serializer(translation).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/xml"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path=r"(?P<layer>output|risk)/dzi")
    def dzi(self, request, pk=None, layer=None):
        t = self.get_object()
        return serve_pyramid(request, t.pyramid if layer == "output" else t.risk_pyramid, "mosaic.dzi")

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"(?P<layer>output|risk)/tiles/(?P<tile>[\w./-]+)")
    def tiles(self, request, pk=None, layer=None, tile=None):
        t = self.get_object()
        return serve_pyramid(request, t.pyramid if layer == "output" else t.risk_pyramid, "mosaic_files/" + tile)
