# IdempotencyKey is an HTTP concern and moved to the core app. The table is renamed and
# the model leaves this app's state; core's 0001 adopts it without touching the database.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("jobs", "0003_taskrun_result")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AlterModelTable(name="idempotencykey", table="core_idempotencykey"),
            ],
            state_operations=[migrations.DeleteModel(name="IdempotencyKey")],
        ),
    ]
