from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training and the loop"

    def ready(self) -> None:
        # The loop listens to feedback collection here, once; annotate never imports training.
        from annotate import hooks
        from training import pipeline, tasks  # noqa: F401  (tasks: registered with Celery)

        hooks.on_pair_completed(pipeline.round_check_quota_after_submit)
