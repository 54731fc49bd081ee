"""The models the ModelSink tests write; their tables come from the migration, run by the test runner."""

from __future__ import annotations

import django
from django.db import models
from django.db.models import Q


def positive_n() -> models.CheckConstraint:
    """``n >= 0``, in the spelling of the Django that runs (``check=`` became ``condition=`` in 5.1)."""
    keyword = "condition" if django.VERSION >= (5, 1) else "check"
    return models.CheckConstraint(**{keyword: Q(n__gte=0)}, name="event_n_gte_0")


class Event(models.Model):
    """An event; the migration adds ``tx`` and ``backend``, which say which transaction and
    which server session wrote each row (the model leaves them to their defaults)."""

    seq = models.BigAutoField(primary_key=True)
    k = models.TextField(default="")
    n = models.IntegerField()
    s = models.TextField(unique=True, null=True)

    class Meta:
        constraints = [positive_n()]  # noqa: RUF012 - Django's own shape


class Base(models.Model):
    """A base model that has no table."""

    n = models.IntegerField()

    class Meta:
        abstract = True


class Place(models.Model):
    name = models.TextField()


class Restaurant(Place):
    """Multi-table inheritance: bulk_create cannot save these."""

    seats = models.IntegerField()


class Missing(models.Model):
    """A model whose table was never made."""

    n = models.IntegerField()

    class Meta:
        managed = False
        db_table = "no_such_table"
