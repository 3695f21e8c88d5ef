"""Settings for the test project: nothing that needs a database or a writable directory."""

SECRET_KEY = "forkserve-tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_site.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
# Django sets the process's TZ from TIME_ZONE (default America/Chicago): keep the worker in UTC.
TIME_ZONE = "UTC"
# Exceptions reach the server, so the test is of the server's 500 and its log (as with
# Flask's PROPAGATE_EXCEPTIONS), not of Django's error page.
DEBUG_PROPAGATE_EXCEPTIONS = True
# Uploads past 2.5 MB go to a temporary file (Django's default), so a 20 MB upload is read
# from disk, as in production.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2621440
