import os

from django.core.wsgi import get_wsgi_application

from apps.core.wsgi import RequestBodyGuard

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")
# A body cut short of its Content-Length raises instead of passing for a shorter file.
application = RequestBodyGuard(get_wsgi_application())
