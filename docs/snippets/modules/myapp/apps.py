# myapp/apps.py
from django.apps import AppConfig


class MyAppConfig(AppConfig):
    name = "myapp"

    def ready(self):
        from prometheus_client import REGISTRY

        from batchdispatch.contrib.prometheus import DispatcherCollector

        REGISTRY.register(DispatcherCollector())
