"""The tables of the ModelSink tests: Event (and its tx and backend columns), Place and Restaurant."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models

from ..models import positive_n


class Migration(migrations.Migration):
    initial = True

    dependencies: list = []  # noqa: RUF012 - Django's own shape

    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Event",
            fields=[
                ("seq", models.BigAutoField(primary_key=True, serialize=False)),
                ("k", models.TextField(default="")),
                ("n", models.IntegerField()),
                ("s", models.TextField(null=True, unique=True)),
            ],
            options={"constraints": [positive_n()]},
        ),
        migrations.RunSQL(
            "ALTER TABLE django_sinks_event"
            " ADD COLUMN tx bigint NOT NULL DEFAULT txid_current(),"
            " ADD COLUMN backend int NOT NULL DEFAULT pg_backend_pid()",
            reverse_sql="ALTER TABLE django_sinks_event DROP COLUMN tx, DROP COLUMN backend",
        ),
        migrations.CreateModel(
            name="Place",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("name", models.TextField()),
            ],
        ),
        migrations.CreateModel(
            name="Restaurant",
            fields=[
                ("place_ptr", models.OneToOneField(
                    auto_created=True, on_delete=django.db.models.deletion.CASCADE, parent_link=True,
                    primary_key=True, serialize=False, to="django_sinks.place",
                )),
                ("seats", models.IntegerField()),
            ],
            bases=("django_sinks.place",),
        ),
        migrations.CreateModel(
            name="Missing",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("n", models.IntegerField()),
            ],
            options={"managed": False, "db_table": "no_such_table"},
        ),
    ]
