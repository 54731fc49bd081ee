"""Stands in for the project's own upload handling, which the page leaves out."""

from types import SimpleNamespace


def save_upload(request):
    return SimpleNamespace(pk=7)
