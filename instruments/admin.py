from django.contrib import admin

from .models import Instrument


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "piezo_address", "focus_address", "camera_address", "online"]
    list_filter = ["project"]
    readonly_fields = ["heartbeat_at", "worker_state"]
    raw_id_fields = ["flatfield_calibration"]  # a lab's scans are too many for one drop-down

    @admin.display(boolean=True)
    def online(self, instrument):
        return instrument.online
