# TaskRun.result (django.tasks return values and errors) and an index on TaskRun.root_id
# (get_result() reads a retry chain's runs). The index is built CONCURRENTLY:
# jobs_taskrun takes an INSERT per task start, and a plain CREATE INDEX would block them.

from django.db import migrations, models

INDEX = models.Index(fields=["root_id"], name="taskrun_root")


def add_index(apps, schema_editor):
    schema_editor.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS taskrun_root ON jobs_taskrun (root_id)")


def remove_index(apps, schema_editor):
    schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS taskrun_root")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("jobs", "0002_schedule_slot"),
    ]

    operations = [
        migrations.AddField(
            model_name="taskrun",
            name="result",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="taskrun", index=INDEX)],
            database_operations=[migrations.RunPython(add_index, remove_index)],
        ),
    ]
