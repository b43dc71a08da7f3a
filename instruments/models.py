"""The instrument record: which drivers, at which addresses, and whether its worker is alive."""
from datetime import timedelta

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from ssumweb.models import Project

HEARTBEAT_FRESH_S = 10


class Instrument(models.Model):
    PROJECT_PATH = "project"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="instruments")
    name = models.CharField(max_length=200)
    # Driver addresses such as "gcs+tcp://192.168.0.10:50000", "esp301+serial:///dev/ttyUSB0", "pco";
    # "sim" runs the wire-level fakes against the physics simulator.
    piezo_address = models.CharField(max_length=300, default="sim")
    focus_address = models.CharField(max_length=300, default="sim")
    camera_address = models.CharField(max_length=300, default="sim")
    # Calibration: the sample-side pixel size and the sphere's useful circular field of view.
    pixel_size_nm = models.FloatField(default=32.5)
    fov_diameter_nm = models.FloatField(default=14_000.0)
    frame_width_px = models.PositiveIntegerField(default=512)
    frame_height_px = models.PositiveIntegerField(default=512)
    # Camera region of interest around the sphere's image, [x0, y0, x1, y1] sensor px (end-exclusive);
    # empty: a frame_width × frame_height window centred on the sensor.
    camera_roi = models.JSONField(default=list, blank=True)
    # Focus-stage position that is sharp for a surface in contact with the sphere (autofocus starts there).
    focus_reference_nm = models.FloatField(null=True, blank=True)
    # How closely the scanner lands where its sensors read (1σ per axis, nm; a closed-loop piezo: a few nm).
    # Known, stitching puts frames where the stage put them, turned by the camera's rotation the overlaps
    # measure (imaging.repeatable_stage); empty: not known, the overlaps place the frames.
    stage_repeatability_nm = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    travel_x_nm = models.FloatField(default=100_000.0)
    travel_y_nm = models.FloatField(default=100_000.0)
    sim_seed = models.IntegerField(default=0)
    # A scan of bare silicon through the sphere whose frames are this instrument's flat field: stitches of
    # its scans use it unless told otherwise (imaging.jobs.flatfield_options).
    flatfield_calibration = models.ForeignKey("imaging.Scan", null=True, blank=True, on_delete=models.SET_NULL,
                                              related_name="+")
    # Written by the hardware worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker_state = models.JSONField(default=dict, blank=True)  # position, contact, live view on/off
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def online(self) -> bool:
        return bool(self.heartbeat_at and timezone.now() - self.heartbeat_at < timedelta(seconds=HEARTBEAT_FRESH_S))
