"""The lab catalogue: what was scanned, what it produced, and how SSUM and SEM images pair up.

Every object belongs to a project (directly or through its parent); `PROJECT_PATH` names the
lookup from the model to its project so access checks read the same everywhere.
"""
from django.conf import settings
from django.db import models
from django.utils import timezone

from ssumweb.models import Job, Project


class SampleSurface(models.TextChoices):
    """What a sample is, for imaging: a chip, or bare silicon, the reference a flat field is calibrated
    on (its scans are offered as flat fields and not stitched; a simulated bench images each as it is)."""

    CHIP = "chip", "IC chip"
    BARE_SILICON = "bare_silicon", "Bare silicon (a flat-field reference)"


class Sample(models.Model):
    PROJECT_PATH = "project"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="samples")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # For simulated chips: the generator's seed and size, so the demo is reproducible.
    sim_seed = models.IntegerField(null=True, blank=True)
    surface = models.CharField(max_length=16, choices=SampleSurface.choices, default=SampleSurface.CHIP)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="sample_name_unique_in_project")]

    def __str__(self):
        return self.name


class ScanStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"


class Scan(models.Model):
    """A raster of fields of view over a sample: the plan, its progress and how it ended."""

    PROJECT_PATH = "project"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="scans")
    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="scans")
    instrument = models.ForeignKey("instruments.Instrument", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="scans")
    name = models.CharField(max_length=200)
    # --- the plan (validated by imaging.plan.validate_plan) ---
    origin_x_nm = models.FloatField()
    origin_y_nm = models.FloatField()
    size_x_nm = models.FloatField()
    size_y_nm = models.FloatField()
    step_nm = models.FloatField()
    overlap = models.FloatField()
    exposure_ms = models.FloatField()
    contact_setpoint_nm = models.FloatField()
    z_planes = models.PositiveSmallIntegerField(default=1)
    z_step_nm = models.FloatField(default=0.0)
    autofocus = models.BooleanField(default=True)
    rows = models.PositiveIntegerField()
    cols = models.PositiveIntegerField()
    translate_with = models.ForeignKey("mlcore.TrainedModel", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="live_scans")
    # --- state ---
    status = models.CharField(max_length=16, choices=ScanStatus.choices, default=ScanStatus.PLANNED, db_index=True)
    status_reason = models.TextField(blank=True)  # why it paused or failed, shown to users
    # The newest action asked of the hardware worker; kept here so a worker that was down picks it up.
    requested_action = models.CharField(max_length=16, blank=True)
    requested_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name

    @property
    def frames_total(self) -> int:
        return self.rows * self.cols

    def folder(self) -> str:
        return f"scans/{self.pk}"


class Frame(models.Model):
    """One captured field of view: on disk and in the database before the stage moves on."""

    PROJECT_PATH = "scan__project"

    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="frames")
    index = models.PositiveIntegerField()
    row = models.PositiveIntegerField()
    col = models.PositiveIntegerField()
    commanded_x_nm = models.FloatField()
    commanded_y_nm = models.FloatField()
    measured_x_nm = models.FloatField()
    measured_y_nm = models.FloatField()
    measured_z_nm = models.FloatField(null=True, blank=True)
    focus_nm = models.FloatField(null=True, blank=True)
    captured_at = models.DateTimeField()
    exposure_ms = models.FloatField()
    image = models.FileField(max_length=500)  # 16-bit TIFF
    z_stack = models.FileField(max_length=500, blank=True)  # multi-page 16-bit TIFF, when planes > 1
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    focus_score = models.FloatField(null=True, blank=True)
    deflection_nm = models.FloatField(null=True, blank=True)  # contact force proxy at capture

    class Meta:
        ordering = ["scan", "index"]
        constraints = [models.UniqueConstraint(fields=["scan", "index"], name="one_frame_per_grid_point")]


#: A stitch report's flat field, as a mosaic's label says it.
FLATFIELD_WORDS = {"overlaps": "the flat field of its frames", "estimated": "the flat field of its frames",
                   "calibration": "a flat field calibrated on bare silicon", "none": "no flat field"}


class Mosaic(Job):
    """A scan stitched into one 16-bit image with its pixel size, plus its deep-zoom pyramid."""

    PROJECT_PATH = "scan__project"

    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="mosaics")
    live = models.BooleanField(default=False)  # grown frame by frame during the scan
    pixel_size_nm = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    origin_x_nm = models.FloatField(null=True, blank=True)
    origin_y_nm = models.FloatField(null=True, blank=True)
    image = models.FileField(max_length=500, blank=True)
    pyramid = models.CharField(max_length=500, blank=True)  # folder holding mosaic.dzi + mosaic_files/
    display_low = models.FloatField(null=True, blank=True)  # 16-bit window mapped to 0..255 in tiles
    display_high = models.FloatField(null=True, blank=True)
    report = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def discard_unfinished_output(self) -> None:
        """A stitch that died or was stopped after writing its mosaic.tif (during its pyramid) keeps no
        mosaic.tif: nothing shows or serves a failed mosaic's image, and stitching again makes a new one."""
        from ssumweb.media import absolute

        image = Mosaic.objects.filter(pk=self.pk).values_list("image", flat=True).first()
        if image:
            absolute(image).unlink(missing_ok=True)
            Mosaic.objects.filter(pk=self.pk).update(image="")

    @property
    def label(self) -> str:
        """How pickers and lists name a mosaic: scans are often named alike ("Scan") and stitched more
        than once, so with its sample, when it was stitched (the server's time zone) and its flat field."""
        stitched = timezone.localtime(self.finished_at or self.created_at).strftime("%Y-%m-%d %H:%M")
        flat = FLATFIELD_WORDS.get((self.report or {}).get("flatfield", ""))
        size = f"{self.width}×{self.height} px"
        if self.pixel_size_nm and self.width and self.height:  # what the lab measures by: the area it shows
            size += f" ({self.width * self.pixel_size_nm / 1000:.3g} × {self.height * self.pixel_size_nm / 1000:.3g} µm)"
        return (f"Mosaic {self.pk}: {self.scan.sample.name} / {self.scan.name}, stitched {stitched}"
                f"{f' with {flat}' if flat else ''}, {size}")

    @property
    def uncertain_frames(self) -> list[int]:
        """Positions (in the report's frame list) of the frames the final stitch placed unsurely; [] for a
        live mosaic or one stitched before reports listed them."""
        return list((self.report or {}).get("uncertain_frames") or ())

    @property
    def stitched_fov_radius_px(self) -> float | None:
        """Radius (px) of the useful field of view the frames were stitched with: stored in the report
        since it names it, else the scan's instrument's current one; None without either."""
        from .jobs import useful_fov_radius_px

        stored = (self.report or {}).get("fov_radius_px")
        if stored is not None:
            return float(stored)
        instrument = self.scan.instrument
        return None if instrument is None else useful_fov_radius_px(instrument)


class PixelSizeSource(models.TextChoices):
    METADATA = "metadata", "File metadata"
    USER = "user", "Entered by a user"


class SEMImage(models.Model):
    PROJECT_PATH = "project"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sem_images")
    sample = models.ForeignKey(Sample, null=True, blank=True, on_delete=models.SET_NULL, related_name="sem_images")
    name = models.CharField(max_length=255)
    original_name = models.CharField(max_length=255, blank=True)
    image = models.FileField(max_length=500)  # 16-bit TIFF, data bar removed
    original = models.FileField(max_length=500, blank=True)  # the upload as it came
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    pixel_size_nm = models.FloatField()
    pixel_size_source = models.CharField(max_length=16, choices=PixelSizeSource.choices)
    page = models.PositiveSmallIntegerField(default=0)
    data_bar_rows = models.PositiveIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    pyramid = models.CharField(max_length=500, blank=True)
    display_low = models.FloatField(null=True, blank=True)
    display_high = models.FloatField(null=True, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name


class RegistrationMethod(models.TextChoices):
    AUTOMATIC = "automatic", "Automatic"
    LANDMARKS = "landmarks", "Landmarks"


class Registration(Job):
    """Where the mosaic sits in the SEM image: a 3×3 mosaic→SEM pixel transform and how good it is."""

    PROJECT_PATH = "mosaic__scan__project"

    mosaic = models.ForeignKey(Mosaic, on_delete=models.CASCADE, related_name="registrations")
    sem_image = models.ForeignKey(SEMImage, on_delete=models.CASCADE, related_name="registrations")
    method = models.CharField(max_length=16, choices=RegistrationMethod.choices, default=RegistrationMethod.AUTOMATIC)
    landmarks = models.JSONField(default=list, blank=True)  # [[mosaic_x, mosaic_y, sem_x, sem_y], ...]
    # [x0, y0, x1, y1] mosaic px: where an automatic registration searches (None: the whole mosaic)
    search_box = models.JSONField(null=True, blank=True)
    mosaic_to_sem = models.JSONField(null=True, blank=True)  # 3×3, mosaic pixel → SEM pixel
    residual_px = models.FloatField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    accepted = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    @property
    def overlap_px(self) -> tuple[int, int] | None:
        """Width and height (mosaic px) of the part of the mosaic the SEM image covers; None before a transform."""
        from imaging.pairs import footprint_box

        mosaic, sem = self.mosaic, self.sem_image
        if self.mosaic_to_sem is None or not (mosaic.width and mosaic.height and sem.width and sem.height):
            return None
        box = footprint_box(self.mosaic_to_sem, (sem.height, sem.width), (mosaic.height, mosaic.width))
        return None if box is None else (box[2] - box[0], box[3] - box[1])


class PairSetQuerySet(models.QuerySet):
    def with_counts(self):
        """Each set with its pair_count, train_count and test_count."""
        return self.annotate(pair_count=models.Count("pairs"),
                             train_count=models.Count("pairs", filter=models.Q(pairs__split="train")),
                             test_count=models.Count("pairs", filter=models.Q(pairs__split="test")))


class PairSet(Job):
    """One extraction of LR/HR pairs from a registration, with the settings it used."""

    PROJECT_PATH = "registration__mosaic__scan__project"

    registration = models.ForeignKey(Registration, on_delete=models.CASCADE, related_name="pair_sets")
    pixel_size_nm = models.FloatField(null=True, blank=True)
    tile_px = models.PositiveIntegerField(default=512)
    stride_px = models.PositiveIntegerField(default=512)
    test_fraction = models.FloatField(default=0.2)
    #: skip tiles over frames the stitcher placed with low confidence (their seams may be pixels off)
    skip_uncertain = models.BooleanField(default=True)
    #: tiles left out, by reason (outside_overlap, uncertain_placement, low_structure, straddles_split)
    skipped = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PairSetQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    TEST = "test", "Test"


class ImagePair(models.Model):
    PROJECT_PATH = "registration__mosaic__scan__project"

    registration = models.ForeignKey(Registration, on_delete=models.CASCADE, related_name="pairs")
    pair_set = models.ForeignKey(PairSet, on_delete=models.CASCADE, related_name="pairs")
    lr_image = models.FileField(max_length=500)  # SSUM crop, 16-bit
    hr_image = models.FileField(max_length=500)  # SEM crop resampled to the same pixel size, 16-bit
    box_x = models.PositiveIntegerField()  # in mosaic pixels at the pair pixel size
    box_y = models.PositiveIntegerField()
    box_size = models.PositiveIntegerField()
    pixel_size_nm = models.FloatField()
    split = models.CharField(max_length=8, choices=Split.choices)

    class Meta:
        ordering = ["pair_set", "pk"]
