"""Training runs, the models they produce, and translations of mosaics into SEM-like images."""
from django.conf import settings
from django.db import models

from imaging.models import Mosaic, PairSet, Registration
from ssumweb.models import Job, Project


class TrainingRun(Job):
    PROJECT_PATH = "project"
    resumable = True

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    name = models.CharField(max_length=200)
    registrations = models.ManyToManyField(Registration, related_name="training_runs")
    #: one per registration: sets of one registration cover the same places, so mixing them could put a test tile
    #: of one under a training tile of another
    pair_sets = models.ManyToManyField(PairSet, related_name="training_runs", blank=True)
    config = models.JSONField(default=dict)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    loss_history = models.JSONField(default=list, blank=True)  # [{"step": n, "G": .., "D": .., ...}]
    samples = models.JSONField(default=list, blank=True)  # media paths of per-epoch sample images
    checkpoint = models.CharField(max_length=500, blank=True)
    #: where the run last went on from, for the page ("Resumed from the checkpoint at step 10 of 40; …")
    resume_note = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name


class TrainedModel(models.Model):
    PROJECT_PATH = "project"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="trained_models")
    name = models.CharField(max_length=200)
    training_run = models.OneToOneField(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="trained_model")
    config = models.JSONField(default=dict)
    weights = models.FileField(max_length=500)
    pixel_size_nm = models.FloatField()
    normalisation = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, blank=True)  # model and baselines on the held-out pairs
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name


class Translation(Job):
    PROJECT_PATH = "mosaic__scan__project"

    mosaic = models.ForeignKey(Mosaic, on_delete=models.CASCADE, related_name="translations")
    model = models.ForeignKey(TrainedModel, on_delete=models.CASCADE, related_name="translations")
    live = models.BooleanField(default=False)
    output = models.FileField(max_length=500, blank=True)  # 16-bit SEM-like mosaic
    risk_map = models.FileField(max_length=500, blank=True)  # cycle-consistency hallucination risk
    pyramid = models.CharField(max_length=500, blank=True)
    risk_pyramid = models.CharField(max_length=500, blank=True)
    display_low = models.FloatField(null=True, blank=True)
    display_high = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
