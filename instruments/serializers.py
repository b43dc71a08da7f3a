from rest_framework import serializers

from .models import Instrument


class InstrumentSerializer(serializers.ModelSerializer):
    online = serializers.BooleanField(read_only=True)

    class Meta:
        model = Instrument
        fields = ["id", "project", "name", "piezo_address", "focus_address", "camera_address", "pixel_size_nm",
                  "fov_diameter_nm", "frame_width_px", "frame_height_px", "stage_repeatability_nm", "travel_x_nm", "travel_y_nm", "online",
                  "heartbeat_at", "worker_state", "flatfield_calibration"]
        read_only_fields = fields
        extra_kwargs = {"stage_repeatability_nm": {"help_text": (
            "How closely the scanner lands where its sensors read, 1σ per axis, nm (a closed-loop piezo: a few nm); "
            "null: not known. Known, stitches put frames where the stage put them, turned by the camera's rotation "
            "that the overlaps measure.")},
                        "flatfield_calibration": {"help_text": (
            "The scan of bare silicon whose frames are this instrument's flat field: stitches of its scans use "
            "it unless asked otherwise (set with POST flatfield-calibration/).")}}


class JogSerializer(serializers.Serializer):
    dx_nm = serializers.FloatField(default=0.0, min_value=-10_000, max_value=10_000)
    dy_nm = serializers.FloatField(default=0.0, min_value=-10_000, max_value=10_000)
    dfocus_nm = serializers.FloatField(default=0.0, min_value=-5_000, max_value=5_000)


class LiveSerializer(serializers.Serializer):
    on = serializers.BooleanField()


class FlatfieldCalibrationSerializer(serializers.Serializer):
    scan = serializers.IntegerField(allow_null=True, help_text="A scan of bare silicon taken on this instrument; "
                                                                "null: no calibration (flat fields estimated).")
