from django.contrib import admin

from .models import DemoRun, Event, Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "is_demo", "created_at"]
    search_fields = ["name", "description"]
    inlines = [MembershipInline]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["topic", "seq", "type", "created_at"]
    list_filter = ["type"]
    search_fields = ["topic"]
    readonly_fields = ["topic", "seq", "type", "payload", "created_at"]


@admin.register(DemoRun)
class DemoRunAdmin(admin.ModelAdmin):
    list_display = ["project", "status", "progress", "created_at"]
    list_filter = ["status"]
