"""Django settings, read entirely from the environment (see the README's settings table)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    broker_url_checked,
    database_config,
    env_bool,
    env_int,
    env_list,
    env_path,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set unless DEBUG=1.")
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

ARTIFACTS_DIR = env_path("ARTIFACTS_DIR", VAR_DIR / "artifacts")
MODEL_CACHE_DIR = env_path("MODEL_CACHE_DIR", VAR_DIR / "models")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "audit",
    "registry",
    "annotate",
    "training",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The client address of the request, for the audit trail (audit.context).
    "audit.context.AuditOriginMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into config.lockout's answer.
    "axes.middleware.AxesMiddleware",
]

# Sign-in throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is locked for LOGIN_LOCKOUT_MINUTES, on the API's sign-in and on
# the admin's alike. Attempts and lockouts are listed (and lifted) in the admin under Axes.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.lockout.lockout_response"
AXES_VERBOSE = False  # no banner on every start; attempts are in the admin and the log

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_config(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tandem.sqlite3'}") or "",
        prepared_statements=env_bool("DATABASE_PREPARED_STATEMENTS", True),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise scans it at start-up
# The web UI, built by `make` (frontend/ -> frontend/dist), served under /static/app/.
FRONTEND_DIST = BASE_DIR / "frontend" / "dist"
STATICFILES_DIRS = [("app", FRONTEND_DIST)] if FRONTEND_DIST.is_dir() else []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "/admin/login/"

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Served over HTTPS (SECURE_COOKIES=1): browsers are told to use nothing else for a year.
SECURE_HSTS_SECONDS = 365 * 24 * 3600 if SESSION_COOKIE_SECURE else 0

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.authentication.FastTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "config.pagination.BoundedLimitOffsetPagination",
    # JSON bodies pass the depth and text checks of config.validation before anything reads them.
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.CheckedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "config.schema.TandemAutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tandem API",
    "DESCRIPTION": "Collect pairwise judgments, train reward models and policies, serve them.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # `<id:...>` (config.validation.IdConverter): a database id.
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    },
    # Several models have a `kind`; each choice set gets a name of its own in the schema.
    "ENUM_NAME_OVERRIDES": {
        "RunKindEnum": "training.models.RunKind.choices",
        "ModelKindEnum": "registry.models.ModelKind.choices",
        "FeedbackKindEnum": "annotate.models.FeedbackKind.choices",
    },
}

# Limits on what users may send (also enforced per project where a project has its own).
MAX_PROMPT_CHARS = env_int("MAX_PROMPT_CHARS", 32_000, minimum=1)
MAX_PROMPTS_PER_REQUEST = env_int("MAX_PROMPTS_PER_REQUEST", 5_000, minimum=1)
MAX_IMPORT_BYTES = env_int("MAX_IMPORT_BYTES", 32 * 1024 * 1024, minimum=1024)
# The largest JSON (or form) body read into memory: room for MAX_PROMPTS_PER_REQUEST prompts of a
# few thousand characters. Files are spooled to disk and bounded by MAX_IMPORT_BYTES instead.
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
LEASE_SECONDS = env_int("LEASE_SECONDS", 600, minimum=10)

# --- Celery -------------------------------------------------------------------------------
# The database row, not the Celery result, is the source of truth for a job, so no result backend.
CELERY_BROKER_URL = broker_url_checked(env_str("CELERY_BROKER_URL", "filesystem://") or "")
BROKER_DIR = env_path("BROKER_DIR", VAR_DIR / "broker")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("queue", "processed", "control"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Broadcast messages (purge, inspect) would otherwise land in ./control.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Redis redelivers an unacknowledged task after this long; it must exceed the longest task.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# Acknowledge after the task body ran, and requeue if the worker process died mid-task,
# so a killed worker loses no work (tasks are written to be idempotent).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360, minimum=1)
if CELERY_TASK_SOFT_TIME_LIMIT > CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        "CELERY_TASK_SOFT_TIME_LIMIT must not exceed CELERY_TASK_TIME_LIMIT."
    )
# Intra-op threads of a training or generation run (0: every core). Where the web server shares
# the machine, leave it a core (the demo on two cores uses 1; README "Reliability").
WORKER_TORCH_THREADS = env_int("WORKER_TORCH_THREADS", 0, minimum=0)
GPU_TASK_TIME_LIMIT = env_int("GPU_TASK_TIME_LIMIT", 6 * 3600, minimum=60)

# --- The policy server (manage.py serve): OpenAI-compatible /v1 over the registry ---------------
SERVE_HOST = env_str("SERVE_HOST", "127.0.0.1") or "127.0.0.1"
SERVE_PORT = env_int("SERVE_PORT", 8001, minimum=1)
# Rows (answers being written) decoding together; more wait for a place.
SERVE_MAX_BATCH_ROWS = env_int("SERVE_MAX_BATCH_ROWS", 32, minimum=1)
# The most tokens one answer may ask for (max_tokens), and answers per request (n).
SERVE_MAX_TOKENS = env_int("SERVE_MAX_TOKENS", 2048, minimum=1)
SERVE_MAX_N = env_int("SERVE_MAX_N", 8, minimum=1)
# Requests per minute per API token (0: no limit); a burst of a minute's worth is allowed.
SERVE_RATE_LIMIT_PER_MINUTE = env_int("SERVE_RATE_LIMIT_PER_MINUTE", 600, minimum=0)
# Policy adapters kept loaded beside the base; the least recently used goes first.
SERVE_ADAPTERS_IN_MEMORY = env_int("SERVE_ADAPTERS_IN_MEMORY", 16, minimum=1)
SERVE_TORCH_THREADS = env_int("SERVE_TORCH_THREADS", 0, minimum=0)
SERVE_PRECISION = env_str("SERVE_PRECISION", "auto") or "auto"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES_NAMES = ("default", "gpu")
CELERY_TASK_ROUTES = {
    "training.tasks.run_training": {"queue": "gpu"},
    "training.tasks.generate_round": {"queue": "gpu"},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "reclaim-expired-leases": {"task": "annotate.tasks.reclaim_expired_leases", "schedule": 60.0},
    "reap-stale-runs": {"task": "training.tasks.reap_stale_runs", "schedule": 120.0},
    # A run whose message the broker lost (restarted without persistence) is sent again.
    "resend-lost-runs": {"task": "training.tasks.resend_lost_runs", "schedule": 60.0},
    # The submit that completes a round's quota closes it at once; this catches any it missed.
    "check-round-triggers": {"task": "training.tasks.check_round_triggers", "schedule": 60.0},
    # Projects that set auto_pause_below: annotators the crowd model puts below it are paused.
    "auto-pause-annotators": {"task": "training.tasks.auto_pause_annotators", "schedule": 120.0},
}

LOG_LEVEL = (env_str("LOG_LEVEL", "INFO") or "").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r}: use DEBUG, INFO, WARNING or ERROR.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
