# myapp/views.py
from django.http import HttpResponse

from .events import audit


def rename_project(request, team, project):
    ...
    audit.enqueue(team, {"who": request.user.pk, "did": "rename", "project": project})
    return HttpResponse(status=204)
