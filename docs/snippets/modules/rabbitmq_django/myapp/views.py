# myapp/views.py
from django.conf import settings
from django.http import HttpResponse

from .events import jobs
from .uploads import save_upload  # yours: stores the file, returns its model instance

PREFIX = settings.AMQP_PREFIX  # queue names are PREFIX + "thumbnails", and so on


def upload(request):
    upload = save_upload(request)
    jobs.enqueue(PREFIX + "thumbnails", {"upload": upload.pk})
    jobs.enqueue(PREFIX + "virus-scan", {"upload": upload.pk})
    return HttpResponse(status=202)
