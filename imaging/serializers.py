from django.urls import reverse
from rest_framework import serializers

from ssumweb.serializers import VisibleProjectField

from .models import Frame, ImagePair, Mosaic, PairSet, Registration, RegistrationMethod, Sample, Scan, SEMImage

JOB_FIELDS = ["status", "progress", "message", "failure_reason", "cancel_requested", "heartbeat_at", "queued_at",
              "started_at", "finished_at"]


class SampleSerializer(serializers.ModelSerializer):
    project = VisibleProjectField()
    scan_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Sample
        fields = ["id", "project", "name", "description", "sim_seed", "surface", "created_at", "scan_count"]
        read_only_fields = ["id", "created_at", "scan_count"]
        validators = []  # uniqueness is the service's to check, with an error that names the field


class ScanSerializer(serializers.ModelSerializer):
    frames_done = serializers.IntegerField(read_only=True)
    frames_total = serializers.IntegerField(read_only=True)
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Scan
        fields = ["id", "project", "sample", "instrument", "name", "origin_x_nm", "origin_y_nm", "size_x_nm",
                  "size_y_nm", "step_nm", "overlap", "exposure_ms", "contact_setpoint_nm", "z_planes", "z_step_nm",
                  "autofocus", "rows", "cols", "translate_with", "status", "status_reason", "requested_action",
                  "created_at", "started_at", "paused_at", "finished_at", "frames_done", "frames_total",
                  "thumbnail_url"]
        read_only_fields = fields

    def get_thumbnail_url(self, scan) -> str | None:
        frame_id = getattr(scan, "first_frame_id", None)
        return reverse("api:frame-thumbnail", args=[frame_id]) if frame_id else None


class ScanPlanSerializer(serializers.Serializer):
    """The input of a new scan. Range checks live in imaging.scan_plan so every caller shares them."""

    sample = serializers.IntegerField()
    instrument = serializers.IntegerField(required=False, allow_null=True)
    translate_with = serializers.IntegerField(required=False, allow_null=True)
    name = serializers.CharField(max_length=200)
    origin_x_nm = serializers.FloatField()
    origin_y_nm = serializers.FloatField()
    size_x_nm = serializers.FloatField()
    size_y_nm = serializers.FloatField()
    step_nm = serializers.FloatField(required=False, allow_null=True)
    overlap = serializers.FloatField(default=0.3)
    exposure_ms = serializers.FloatField(default=20.0)
    contact_setpoint_nm = serializers.FloatField(default=50.0)
    z_planes = serializers.IntegerField(default=1)
    z_step_nm = serializers.FloatField(default=0.0)
    autofocus = serializers.BooleanField(default=True)


class FrameSerializer(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Frame
        fields = ["id", "scan", "index", "row", "col", "commanded_x_nm", "commanded_y_nm", "measured_x_nm",
                  "measured_y_nm", "measured_z_nm", "focus_nm", "captured_at", "exposure_ms", "width", "height",
                  "focus_score", "deflection_nm", "image_url", "thumbnail_url"]
        read_only_fields = fields

    def get_image_url(self, frame) -> str:
        return reverse("api:frame-image", args=[frame.pk])

    def get_thumbnail_url(self, frame) -> str:
        return reverse("api:frame-thumbnail", args=[frame.pk])


class MosaicSerializer(serializers.ModelSerializer):
    dzi_url = serializers.SerializerMethodField()
    label = serializers.CharField(read_only=True, help_text="How the pages name it: sample, scan, when stitched, "
                                                            "flat field, size.")

    class Meta:
        model = Mosaic
        fields = ["id", "label", "scan", "live", "pixel_size_nm", "width", "height", "origin_x_nm", "origin_y_nm",
                  "display_low", "display_high", "report", "options", "created_at", "dzi_url", *JOB_FIELDS]
        read_only_fields = [f for f in fields if f not in ("scan", "options")]
        extra_kwargs = {"report": {"help_text": (
            "The final stitch's report: positions_px per frame, links (i, j, offset_px, score, residual_px, "
            "dropped), mean/max_residual_px, placed_by_stage, frame_confidence (0–1 per frame), frame_disagreement "
            "(per frame, how much better one of its overlaps correlates at another offset, NCC) and "
            "uncertain_frames (placed by the stage alone, with low confidence, or with some while an overlap "
            "disagrees: their seams may be pixels off); frame numbers are positions in frame_index, the scan's "
            "frame indices; fov_radius_px is the useful field of view's radius the frames were stitched with; "
            "edge_blur_px is how much blurrier (Gaussian σ, px) that field's edge is than its centre, matched "
            "across each overlap (0: not matched), edge_blur how it was chosen (estimated, given, none) or why "
            "an estimate was not used (inconsistent, unbounded, no_overlaps); stage_repeatability_nm is the "
            "instrument's, when known, and stage_calibration what the overlaps measured of that stage "
            "(rotation_deg: the camera against the scanner; scale: each scanner axis (x, y) against the pixel size, "
            "1.0015 being 0.15 % long; skew_deg: its axes' departure from square; links_agreeing of links_measured; "
            "median_residual_px; "
            "believed: false when too few agreed and the overlaps placed the frames instead).")}}

    def get_dzi_url(self, mosaic) -> str | None:
        return reverse("api:mosaic-dzi", args=[mosaic.pk]) if mosaic.pyramid else None


class MosaicCreateSerializer(serializers.Serializer):
    scan = serializers.IntegerField()
    flatfield = serializers.ChoiceField(
        choices=["estimate", "calibration", "none"], required=False, allow_null=True, default=None,
        help_text="Shading correction: estimated from the scan's own frames, from a calibration scan of bare "
                  "silicon (calibration_scan), or none. Left out: the instrument's flat-field calibration where "
                  "it has one, else estimated.")
    calibration_scan = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="With flatfield 'calibration': a scan of bare silicon, on the same instrument with frames of the "
                  "same size; its frames are combined pixel by pixel into the flat field (their median, from three "
                  "frames on, so dust that moves between them drops out).")


class SEMImageSerializer(serializers.ModelSerializer):
    dzi_url = serializers.SerializerMethodField()

    class Meta:
        model = SEMImage
        fields = ["id", "project", "sample", "name", "original_name", "width", "height", "pixel_size_nm",
                  "pixel_size_source", "page", "data_bar_rows", "metadata", "display_low", "display_high",
                  "created_at", "dzi_url"]
        read_only_fields = fields

    def get_dzi_url(self, sem) -> str | None:
        return reverse("api:semimage-dzi", args=[sem.pk]) if sem.pyramid else None


class SEMUploadSerializer(serializers.Serializer):
    project = serializers.IntegerField()
    sample = serializers.IntegerField(required=False, allow_null=True)
    file = serializers.FileField()
    name = serializers.CharField(max_length=255, required=False, allow_blank=True)
    pixel_size_nm = serializers.FloatField(required=False, allow_null=True, min_value=0.01, max_value=1_000_000,
                                           error_messages={"min_value": "A pixel size is at least {min_value} nm.",
                                                           "max_value": "A pixel size is at most {max_value} nm."})
    page = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=1000)


class RegistrationSerializer(serializers.ModelSerializer):
    overlap_px = serializers.SerializerMethodField(
        help_text="[width, height] in mosaic px of the part of the mosaic the SEM image covers (null before a transform).")
    suggested_tile_px = serializers.SerializerMethodField(
        help_text="The largest pair tile size (512, 256, 128, 64) of which 8 fit the overlap (null before a transform).")

    class Meta:
        model = Registration
        fields = ["id", "mosaic", "sem_image", "method", "landmarks", "search_box", "mosaic_to_sem", "residual_px",
                  "confidence", "details", "accepted", "overlap_px", "suggested_tile_px", "created_at", *JOB_FIELDS]
        read_only_fields = fields

    def get_overlap_px(self, obj) -> list[int] | None:
        overlap = obj.overlap_px
        return None if overlap is None else list(overlap)

    def get_suggested_tile_px(self, obj) -> int | None:
        from .pairs import suggested_tile

        overlap = obj.overlap_px
        return None if overlap is None else suggested_tile(*overlap)


class LandmarkField(serializers.ListField):
    child = serializers.FloatField()

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if len(values) != 4:
            raise serializers.ValidationError("Each landmark is [mosaic_x, mosaic_y, sem_x, sem_y] in pixels.")
        return values


class RegistrationCreateSerializer(serializers.Serializer):
    mosaic = serializers.IntegerField()
    sem_image = serializers.IntegerField()
    method = serializers.ChoiceField(choices=RegistrationMethod.choices, default=RegistrationMethod.AUTOMATIC)
    landmarks = serializers.ListField(child=LandmarkField(), required=False, default=list, max_length=200)
    search_box = serializers.ListField(
        child=serializers.FloatField(), min_length=4, max_length=4, required=False, allow_null=True, default=None,
        help_text="Automatic only: [x0, y0, x1, y1] in mosaic pixels, the part of the mosaic the SEM image lies in "
                  "(needed where the SEM image covers less than 1/64 of the mosaic's area).")

    def validate(self, data):
        if data["method"] == RegistrationMethod.LANDMARKS and len(data["landmarks"]) < 3:
            raise serializers.ValidationError({"landmarks": "At least 3 landmark pairs are needed."})
        box = data.get("search_box")
        if box is not None:
            if data["method"] != RegistrationMethod.AUTOMATIC:
                raise serializers.ValidationError({"search_box": "A search box applies to automatic registration only."})
            x0, y0, x1, y1 = box
            if x1 - x0 < 16 or y1 - y0 < 16:
                raise serializers.ValidationError({"search_box": "Give [x0, y0, x1, y1] with x1 > x0 and y1 > y0, "
                                                                 "at least 16 px each way."})
        return data


class PairSetSerializer(serializers.ModelSerializer):
    pair_count = serializers.IntegerField(read_only=True, required=False)
    train_count = serializers.IntegerField(read_only=True, required=False)
    test_count = serializers.IntegerField(read_only=True, required=False)
    skipped_in_words = serializers.SerializerMethodField(help_text="skipped as a user reads it")

    class Meta:
        model = PairSet
        fields = ["id", "registration", "pixel_size_nm", "tile_px", "stride_px", "test_fraction", "skip_uncertain",
                  "skipped", "skipped_in_words", "created_at", "pair_count", "train_count", "test_count", *JOB_FIELDS]
        read_only_fields = fields

    def get_skipped_in_words(self, obj) -> str:
        from .pairs import skipped_in_words  # imaging.pairs loads OpenCV, which the web process otherwise never needs

        return skipped_in_words(obj.skipped or {})


class PairSetCreateSerializer(serializers.Serializer):
    registration = serializers.IntegerField()
    pixel_size_nm = serializers.FloatField(required=False, allow_null=True, min_value=0.1, max_value=10_000)
    tile_px = serializers.IntegerField(default=512, min_value=32, max_value=2048)
    stride_px = serializers.IntegerField(required=False, allow_null=True, min_value=16, max_value=4096)
    test_fraction = serializers.FloatField(default=0.2, min_value=0.0, max_value=0.9)
    skip_uncertain = serializers.BooleanField(
        default=True, help_text="Skip tiles over frames the stitcher placed with low confidence (the mosaic "
                                "report's uncertain_frames): their alignment with the SEM image may be pixels off.")

    def validate(self, data):
        # imaging.pairs.cut_pairs's own limit, refused here rather than by the job; the limits that need the
        # mosaic (the tile on its grid) are imaging.jobs.queue_pairs's
        stride, tile = data.get("stride_px"), data["tile_px"]
        if stride is not None and stride > 4 * tile:
            raise serializers.ValidationError(
                {"stride_px": f"The stride must be at most {4 * tile} px (4 × the tile size); got {stride} px."},
                code="max_value")
        return data


class ImagePairSerializer(serializers.ModelSerializer):
    lr_url = serializers.SerializerMethodField()
    hr_url = serializers.SerializerMethodField()

    class Meta:
        model = ImagePair
        fields = ["id", "registration", "pair_set", "box_x", "box_y", "box_size", "pixel_size_nm", "split", "lr_url",
                  "hr_url"]
        read_only_fields = fields

    def get_lr_url(self, pair) -> str:
        return reverse("api:imagepair-image", args=[pair.pk, "lr"])

    def get_hr_url(self, pair) -> str:
        return reverse("api:imagepair-image", args=[pair.pk, "hr"])
