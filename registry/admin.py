from django.contrib import admin

from registry.models import ModelVersion, PromotionEvent


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "kind", "number", "status", "parent", "created_at", "promoted_at"]
    list_filter = ["project", "kind", "status"]
    raw_id_fields = ["parent"]


@admin.register(PromotionEvent)
class PromotionEventAdmin(admin.ModelAdmin):
    list_display = ["version", "action", "replaced", "actor", "created_at"]
