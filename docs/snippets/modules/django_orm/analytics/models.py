# analytics/models.py
from django.db import models


class PageView(models.Model):
    path = models.CharField(max_length=500)
    user_id = models.IntegerField(null=True)


class AuditEntry(models.Model):
    event_id = models.UUIDField(unique=True)  # made when the event is enqueued
    action = models.CharField(max_length=50)
    user_id = models.IntegerField(null=True)
