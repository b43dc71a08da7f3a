from django.contrib import admin

from .models import Frame, ImagePair, Mosaic, PairSet, Registration, Sample, Scan, SEMImage

JOB_FIELDS = ["status", "progress", "message", "failure_reason", "heartbeat_at", "started_at", "finished_at"]


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "surface", "sim_seed", "created_at"]
    list_filter = ["project", "surface"]
    search_fields = ["name", "description"]


class FrameInline(admin.TabularInline):
    model = Frame
    extra = 0
    fields = ["index", "row", "col", "measured_x_nm", "measured_y_nm", "focus_nm", "deflection_nm", "captured_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    list_display = ["name", "sample", "instrument", "status", "rows", "cols", "created_at"]
    list_filter = ["status", "project", "instrument"]
    search_fields = ["name", "sample__name"]
    # The status moves only through imaging.services: shown here, never edited by hand.
    readonly_fields = ["status", "status_reason", "requested_action", "requested_at", "started_at", "paused_at",
                       "finished_at", "rows", "cols"]
    inlines = [FrameInline]


@admin.register(Frame)
class FrameAdmin(admin.ModelAdmin):
    list_display = ["scan", "index", "row", "col", "captured_at"]
    list_filter = ["scan__project"]


@admin.register(Mosaic)
class MosaicAdmin(admin.ModelAdmin):
    list_display = ["pk", "scan", "live", "width", "height", "pixel_size_nm", "status"]
    list_filter = ["status", "live"]
    readonly_fields = JOB_FIELDS


@admin.register(SEMImage)
class SEMImageAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "width", "height", "pixel_size_nm", "pixel_size_source", "created_at"]
    list_filter = ["project", "pixel_size_source"]
    search_fields = ["name", "original_name"]


@admin.register(Registration)
class RegistrationAdmin(admin.ModelAdmin):
    list_display = ["pk", "mosaic", "sem_image", "method", "residual_px", "confidence", "accepted", "status"]
    list_filter = ["status", "method", "accepted"]
    readonly_fields = JOB_FIELDS


@admin.register(PairSet)
class PairSetAdmin(admin.ModelAdmin):
    list_display = ["pk", "registration", "tile_px", "stride_px", "test_fraction", "status"]
    readonly_fields = JOB_FIELDS


@admin.register(ImagePair)
class ImagePairAdmin(admin.ModelAdmin):
    list_display = ["pk", "pair_set", "split", "box_x", "box_y", "box_size"]
    list_filter = ["split"]
