from django.apps import AppConfig


class AnnotateConfig(AppConfig):
    name = "annotate"
    verbose_name = "Feedback collection"

    def ready(self) -> None:
        # `<id:...>` in every URL module: a database id, 1 to 2^63 - 1, or the URL is a 404.
        # Registered here because URL modules load after every app is ready.
        from django.urls import register_converter

        from config.validation import IdConverter

        register_converter(IdConverter, "id")
