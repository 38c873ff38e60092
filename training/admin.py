from django.contrib import admin

from training.models import MetricPoint, TrainingRun


class MetricPointInline(admin.TabularInline):
    model = MetricPoint
    extra = 0
    can_delete = False


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "status", "step", "total_steps", "heartbeat_at"]
    list_filter = ["project", "kind", "status"]
    raw_id_fields = ["round", "input_version", "output_version"]


@admin.register(MetricPoint)
class MetricPointAdmin(admin.ModelAdmin):
    list_display = ["run", "step", "split", "name", "value"]
    list_filter = ["split", "name"]
