"""Projects (lab groups with roles), persisted events and the job state every long task shares."""
from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


ROLE_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class Project(models.Model):
    """A lab group: everything it owns is visible only to its members."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    is_demo = models.BooleanField(default=False)  # the first-run project on the simulated instrument
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]
        ordering = ["project", "user"]

    def __str__(self):
        return f"{self.user} in {self.project} as {self.role}"


class Event(models.Model):
    """One published event, kept (bounded per topic) so a reconnecting browser can catch up by seq."""

    topic = models.CharField(max_length=64, db_index=True)  # e.g. "scan.12"
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["topic", "seq"], name="one_seq_per_topic")]
        ordering = ["topic", "seq"]

    def as_message(self) -> dict:
        kind, _, object_id = self.topic.partition(".")
        return {
            "type": self.type,
            "object": kind,
            "id": int(object_id) if object_id.isdigit() else object_id,
            "seq": self.seq,
            "at": self.created_at.isoformat() if self.created_at else None,
            **self.payload,
        }


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Job(models.Model):
    """What users see of a background job, kept on the domain object itself.

    The task queue only runs code; progress, cancel requests and the heartbeat that tells a
    dead worker from a slow one live here, where pages and the API read them.
    """

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)  # 0..1
    message = models.CharField(max_length=500, blank=True)
    failure_reason = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def discard_unfinished_output(self) -> None:
        """Remove what a job that failed or was cancelled wrote but never finished (called as it ends so,
        by its worker or by the reaper); nothing by default, where such output is staged and swept."""


class DemoRun(Job):
    """One press of "Run the demo": scan → mosaic → SEM → registration → pairs → training → translation."""

    PROJECT_PATH = "project"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="demo_runs")
    steps = models.JSONField(default=list)  # [{"name", "label", "status", "message", "url"}]
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [  # one demo at a time in a project, however many presses arrive at once
            models.UniqueConstraint(fields=["project"], condition=models.Q(status__in=["queued", "running"]),
                                    name="one_active_demo_per_project")]
