import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
# Import every URL module (the API, its schema views, the admin) now, while the worker starts,
# instead of inside the first request each worker serves.
get_resolver().url_patterns  # noqa: B018
