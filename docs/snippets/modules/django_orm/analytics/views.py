# analytics/views.py
from .events import page_views


def product(request, slug):
    page_views().enqueue({"path": request.path, "user_id": request.user.pk})
    ...
