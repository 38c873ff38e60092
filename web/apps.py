from django.apps import AppConfig


class WebConfig(AppConfig):
    """The web UI: serves the built single-page app and the few JSON endpoints only it needs."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "web"
