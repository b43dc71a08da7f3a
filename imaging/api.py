"""REST endpoints of the lab catalogue: parse, check the role, delegate to services, respond."""
from __future__ import annotations

import django_filters
from django.db.models import Count, Min
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, parsers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from instruments.models import Instrument
from ssumweb import jobs
from ssumweb.access import require, visible_projects
from ssumweb.api import ProjectScopedViewSet, get_visible, project_id_of
from ssumweb.errors import DomainError
from ssumweb.events import events_after
from ssumweb.media import send_file
from ssumweb.models import Role
from ssumweb.parsers import JSONParser

from . import selectors, sem_service, services
from . import serializers as s
from .models import Frame, ImagePair, Mosaic, PairSet, Registration, Sample, SampleSurface, Scan, SEMImage
from .tiles import serve_pyramid, serve_whole_image_tile


class SampleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                    mixins.UpdateModelMixin, ProjectScopedViewSet):
    model = Sample
    serializer_class = s.SampleSerializer
    filterset_fields = ["project"]
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return super().get_queryset().annotate(scan_count=Count("scans"))

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = serializer.validated_data["project"]
        require(request.user, project.pk, Role.OPERATOR)
        sample = services.create_sample(project=project, name=serializer.validated_data["name"],
                                        description=serializer.validated_data.get("description", ""),
                                        sim_seed=serializer.validated_data.get("sim_seed"),
                                        surface=serializer.validated_data.get("surface", SampleSurface.CHIP),
                                        user=request.user)
        sample.scan_count = 0
        return Response(self.get_serializer(sample).data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        self.require_role(serializer.instance, Role.OPERATOR)
        changes = dict(serializer.validated_data)
        if changes.pop("project", serializer.instance.project) != serializer.instance.project:
            raise DomainError("A sample cannot move to another project.", field="project")
        services.update_sample(serializer.instance, changes)


class ScanFilter(django_filters.FilterSet):
    class Meta:
        model = Scan
        fields = ["project", "sample", "instrument", "status"]


@extend_schema(parameters=[OpenApiParameter("after", int, description="Only events with a larger seq.")])
class ScanViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    model = Scan
    serializer_class = s.ScanSerializer
    filterset_class = ScanFilter
    search_fields = ["name", "sample__name"]
    ordering_fields = ["created_at", "name", "status"]

    def get_queryset(self):
        return super().get_queryset().annotate(frames_done=Count("frames"), first_frame_id=Min("frames__id"))

    @staticmethod
    def _plan_of(request) -> tuple[dict, Sample, Instrument | None]:
        """The request's plan values, its sample (the user must operate its project) and its instrument."""
        plan = s.ScanPlanSerializer(data=request.data)
        plan.is_valid(raise_exception=True)
        data = dict(plan.validated_data)
        sample = get_visible(Sample, data.pop("sample"), request.user, "sample")
        require(request.user, sample.project_id, Role.OPERATOR)
        return data, sample, get_visible(Instrument, data.pop("instrument", None), request.user, "instrument")

    @extend_schema(request=s.ScanPlanSerializer, responses={201: s.ScanSerializer})
    def create(self, request):
        data, sample, instrument = self._plan_of(request)
        from mlcore.models import TrainedModel

        model = get_visible(TrainedModel, data.pop("translate_with", None), request.user, "translate_with")
        scan = services.plan_scan(sample=sample, name=data.pop("name"), instrument=instrument, translate_with=model,
                                  autofocus=data.pop("autofocus"), plan=data, user=request.user)
        return Response(self.get_serializer(self.get_queryset().get(pk=scan.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ScanPlanSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"])
    def preview(self, request):
        """The grid a plan would scan (rows, cols, frames, step; Z planes and the focus travel they span), checked
        as creating the scan checks it; nothing is created. The plan form shows it while the numbers are typed."""
        data, _, instrument = self._plan_of(request)
        for key in ("name", "translate_with", "autofocus"):
            data.pop(key, None)
        checked = services.preview_plan(data, instrument)
        return Response({"rows": checked.rows, "cols": checked.cols, "frames": checked.frames_total,
                         "step_nm": checked.step_nm, "z_planes": checked.z_planes,
                         "z_span_nm": (checked.z_planes - 1) * checked.z_step_nm})

    def _act(self, request, action_name):
        scan = self.get_object()
        self.require_role(scan, Role.OPERATOR)
        services.request_action(scan, action_name)
        return Response(self.get_serializer(self.get_queryset().get(pk=scan.pk)).data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._act(request, "start")

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._act(request, "pause")

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._act(request, "resume")

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def abort(self, request, pk=None):
        return self._act(request, "abort")

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"], url_path="flatfield-choices", url_name="flatfield-choices")
    def flatfield_choices(self, request, pk=None):
        """The flat fields a stitch of this scan can use, as the scan page's stitch form offers them:
        ``{"choices": [{"value", "label", "selected"}]}``, the instrument's calibration selected where it serves.
        A page opened before the scan had frames, or before the instrument was calibrated, asks again here."""
        return Response({"choices": selectors.flatfield_choices(self.get_object())})

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        """The scan's events after ?after=<seq> (what a reconnecting client missed)."""
        scan = self.get_object()
        try:
            after = int(request.query_params.get("after", 0))
        except ValueError:
            raise DomainError("after must be a whole number.", field="after") from None
        return Response({"results": events_after(services.scan_topic(scan.pk), after)})


class FrameViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    model = Frame
    serializer_class = s.FrameSerializer
    filterset_fields = ["scan", "row", "col"]
    ordering_fields = ["index", "captured_at"]

    @extend_schema(responses={(200, "image/tiff"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def image(self, request, pk=None):
        frame = self.get_object()
        return send_file(request, frame.image.name, content_type="image/tiff",
                         download_name=f"scan{frame.scan_id}_frame{frame.index:05d}.tif", max_age=86400, immutable=True)

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def thumbnail(self, request, pk=None):
        return self._jpeg(request, sem_service.thumbnail_for)

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def preview(self, request, pk=None):
        """The frame as a JPEG of at most 512 px across, in its display window."""
        return self._jpeg(request, sem_service.preview_for)

    def _jpeg(self, request, jpeg_for):
        """The frame's JPEG that ``jpeg_for`` makes (once, beside the TIFF); it never changes."""
        return send_file(request, jpeg_for(self.get_object().image.name), content_type="image/jpeg",
                         max_age=86400, immutable=True)


class JobActionsMixin:
    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        obj = self.get_object()
        self.require_role(obj, Role.OPERATOR)
        jobs.request_cancel(obj)
        obj.refresh_from_db()
        return Response(self.get_serializer(obj).data)


class MosaicViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, JobActionsMixin, ProjectScopedViewSet):
    model = Mosaic
    serializer_class = s.MosaicSerializer
    filterset_fields = ["scan", "status", "live"]
    ordering_fields = ["created_at"]

    def get_queryset(self):
        return super().get_queryset().select_related("scan__sample")  # each one's label names them

    @extend_schema(request=s.MosaicCreateSerializer, responses={201: s.MosaicSerializer})
    def create(self, request):
        data = s.MosaicCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        scan = get_visible(Scan, data.validated_data["scan"], request.user, "scan")
        require(request.user, scan.project_id, Role.OPERATOR)
        from .jobs import queue_mosaic

        calibration = get_visible(Scan, data.validated_data.get("calibration_scan"), request.user, "calibration_scan")
        mosaic = queue_mosaic(scan, flatfield=data.validated_data["flatfield"], calibration_scan=calibration)
        return Response(self.get_serializer(mosaic).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/xml"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"])
    def dzi(self, request, pk=None):
        mosaic = self.get_object()
        return serve_pyramid(request, mosaic.pyramid, "mosaic.dzi")

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"tiles/(?P<tile>[\w./-]+)")
    def tiles(self, request, pk=None, tile=None):
        mosaic = self.get_object()
        return serve_pyramid(request, mosaic.pyramid, "mosaic_files/" + tile)

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def thumbnail(self, request, pk=None):
        """The whole stitched mosaic in one pyramid tile (at most the tile size a side), for scan cards."""
        return serve_whole_image_tile(request, self.get_object().pyramid, "mosaic")

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def preview(self, request, pk=None):
        """The downscaled mosaic as it grows during a scan (changes with every frame: not cached)."""
        from instruments.live_mosaic import preview_name

        return send_file(request, preview_name(self.get_object()), content_type="image/jpeg", max_age=0)

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path="translation-preview", url_name="translation-preview")
    def translation_preview(self, request, pk=None):
        """The SEM-like translation growing beside :meth:`preview` during a scan started with a model."""
        from instruments.live_mosaic import translation_preview_name

        return send_file(request, translation_preview_name(self.get_object()), content_type="image/jpeg", max_age=0)

    @extend_schema(responses={(200, "image/tiff"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def image(self, request, pk=None):
        mosaic = self.get_object()
        if not mosaic.image:
            raise NotFound("This mosaic has no image yet.")
        return send_file(request, mosaic.image.name, content_type="image/tiff", download_name=f"mosaic{mosaic.pk}.tif")


class SEMImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    model = SEMImage
    serializer_class = s.SEMImageSerializer
    filterset_fields = ["project", "sample"]
    search_fields = ["name", "original_name"]
    ordering_fields = ["created_at", "name"]
    parser_classes = [parsers.MultiPartParser, parsers.FormParser, JSONParser]

    @extend_schema(request={"multipart/form-data": s.SEMUploadSerializer}, responses={201: s.SEMImageSerializer})
    def create(self, request):
        sem_service.refuse_oversized(request)
        upload = s.SEMUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        project = visible_projects(request.user).filter(pk=data["project"]).first()
        if project is None:
            raise DomainError(f"No project with id {data['project']} among yours.", field="project", code="does_not_exist")
        require(request.user, project.pk, Role.OPERATOR)
        sample = get_visible(Sample, data.get("sample"), request.user, "sample")
        if sample is not None and sample.project_id != project.pk:
            raise DomainError("The sample belongs to another project.", field="sample")
        sem = sem_service.import_sem_upload(project=project, sample=sample, upload=data["file"],
                                            name=data.get("name") or "", pixel_size_nm=data.get("pixel_size_nm"),
                                            page=data.get("page"), user=request.user)
        return Response(self.get_serializer(sem).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/xml"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"])
    def dzi(self, request, pk=None):
        return serve_pyramid(request, self.get_object().pyramid, "mosaic.dzi")

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"tiles/(?P<tile>[\w./-]+)")
    def tiles(self, request, pk=None, tile=None):
        return serve_pyramid(request, self.get_object().pyramid, "mosaic_files/" + tile)

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def thumbnail(self, request, pk=None):
        """The whole SEM image in one pyramid tile (at most the tile size a side), for lists."""
        return serve_whole_image_tile(request, self.get_object().pyramid, "SEM image")

    @extend_schema(responses={(200, "image/tiff"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def image(self, request, pk=None):
        sem = self.get_object()
        return send_file(request, sem.image.name, content_type="image/tiff", download_name=f"sem{sem.pk}.tif")


class RegistrationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, JobActionsMixin, ProjectScopedViewSet):
    model = Registration
    serializer_class = s.RegistrationSerializer
    filterset_fields = ["mosaic", "sem_image", "status", "accepted"]
    ordering_fields = ["created_at"]

    def get_queryset(self):
        return super().get_queryset().select_related("mosaic", "sem_image")  # each one's overlap reads both sizes

    @extend_schema(request=s.RegistrationCreateSerializer, responses={201: s.RegistrationSerializer})
    def create(self, request):
        data = s.RegistrationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        mosaic = get_visible(Mosaic, data.validated_data["mosaic"], request.user, "mosaic")
        sem = get_visible(SEMImage, data.validated_data["sem_image"], request.user, "sem_image")
        require(request.user, project_id_of(mosaic), Role.OPERATOR)
        from .jobs import queue_registration

        registration = queue_registration(mosaic, sem, method=data.validated_data["method"],
                                          landmarks=data.validated_data["landmarks"],
                                          search_box=data.validated_data["search_box"], user=request.user)
        return Response(self.get_serializer(registration).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def accept(self, request, pk=None):
        registration = self.get_object()
        self.require_role(registration, Role.OPERATOR)
        from .jobs import accept_registration

        accept_registration(registration)
        registration.refresh_from_db()
        return Response(self.get_serializer(registration).data)


class PairSetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, JobActionsMixin, ProjectScopedViewSet):
    model = PairSet
    serializer_class = s.PairSetSerializer
    filterset_fields = ["registration", "status"]

    def get_queryset(self):
        return super().get_queryset().with_counts()

    @extend_schema(request=s.PairSetCreateSerializer, responses={201: s.PairSetSerializer})
    def create(self, request):
        data = s.PairSetCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        registration = get_visible(Registration, data.validated_data["registration"], request.user, "registration")
        require(request.user, project_id_of(registration), Role.OPERATOR)
        from .jobs import queue_pairs

        pair_set = queue_pairs(registration, **{k: v for k, v in data.validated_data.items() if k != "registration"})
        return Response(self.get_serializer(self.get_queryset().get(pk=pair_set.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        """The pairs as a zip of PNGs with a JSON manifest."""
        pair_set = self.get_object()
        from .jobs import export_pairs_zip

        return send_file(request, export_pairs_zip(pair_set), content_type="application/zip",
                         download_name=f"pairs{pair_set.pk}.zip")


class ImagePairViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    model = ImagePair
    serializer_class = s.ImagePairSerializer
    filterset_fields = ["pair_set", "registration", "split"]

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"image/(?P<which>lr|hr)")
    def image(self, request, pk=None, which=None):
        pair = self.get_object()
        path = pair.lr_image.name if which == "lr" else pair.hr_image.name
        return send_file(request, path, max_age=86400, immutable=True)
