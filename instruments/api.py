"""Instruments: their state for everyone in the project, live view and jogging for operators."""
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from ssumweb.api import ProjectScopedViewSet, get_visible
from ssumweb.errors import InvalidTransition
from ssumweb.models import Role

from .control import notify_worker
from .models import Instrument
from .serializers import FlatfieldCalibrationSerializer, InstrumentSerializer, JogSerializer, LiveSerializer


class InstrumentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    model = Instrument
    serializer_class = InstrumentSerializer
    filterset_fields = ["project"]

    @extend_schema(request=JogSerializer, responses=InstrumentSerializer)
    @action(detail=True, methods=["post"], serializer_class=JogSerializer)
    def jog(self, request, pk=None):
        """Move the sample or the focus by a small step (refused while a scan runs)."""
        instrument = self.get_object()
        self.require_role(instrument, Role.OPERATOR)
        data = JogSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if instrument.scans.filter(status="running").exists():
            raise InvalidTransition("The instrument is scanning; pause the scan before jogging.")
        notify_worker(instrument.pk, {"command": "jog", **data.validated_data})
        return Response(InstrumentSerializer(instrument).data)

    @extend_schema(request=FlatfieldCalibrationSerializer, responses=InstrumentSerializer)
    @action(detail=True, methods=["post"], url_path="flatfield-calibration",
            serializer_class=FlatfieldCalibrationSerializer)
    def flatfield_calibration(self, request, pk=None):
        """Make a scan of bare silicon this instrument's flat field (or none, with null)."""
        from imaging.jobs import set_flatfield_calibration
        from imaging.models import Scan

        instrument = self.get_object()
        self.require_role(instrument, Role.OPERATOR)
        data = FlatfieldCalibrationSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        set_flatfield_calibration(instrument, get_visible(Scan, data.validated_data["scan"], request.user, "scan"))
        return Response(InstrumentSerializer(instrument).data)

    @extend_schema(request=LiveSerializer, responses=InstrumentSerializer)
    @action(detail=True, methods=["post"], serializer_class=LiveSerializer)
    def live(self, request, pk=None):
        """Turn the live camera view on or off."""
        instrument = self.get_object()
        self.require_role(instrument, Role.OPERATOR)
        data = LiveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        notify_worker(instrument.pk, {"command": "live", "on": data.validated_data["on"]})
        return Response(InstrumentSerializer(instrument).data)
