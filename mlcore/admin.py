from django.contrib import admin

from imaging.admin import JOB_FIELDS

from .models import TrainedModel, TrainingRun, Translation


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "status", "step", "total_steps", "created_at"]
    list_filter = ["status", "project"]
    readonly_fields = [*JOB_FIELDS, "step", "loss_history"]


@admin.register(TrainedModel)
class TrainedModelAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "pixel_size_nm", "created_at"]
    list_filter = ["project"]
    search_fields = ["name"]


@admin.register(Translation)
class TranslationAdmin(admin.ModelAdmin):
    list_display = ["pk", "mosaic", "model", "live", "status", "created_at"]
    list_filter = ["status", "live"]
    readonly_fields = JOB_FIELDS
