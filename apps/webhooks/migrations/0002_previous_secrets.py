"""Rotated-out secrets as a list, each with its own end: a second rotation within the
overlap kept only the latest one, and the secret before stopped signing at once."""

from django.db import migrations, models


def _to_list(apps, schema_editor):
    Endpoint = apps.get_model("webhooks", "WebhookEndpoint")
    for endpoint in Endpoint.objects.exclude(previous_secret="").exclude(
        previous_secret_expires_at=None
    ):
        endpoint.previous_secrets = [
            {
                "secret": endpoint.previous_secret,
                "expires_at": endpoint.previous_secret_expires_at.isoformat(),
            }
        ]
        endpoint.save(update_fields=["previous_secrets"])


def _to_one(apps, schema_editor):
    Endpoint = apps.get_model("webhooks", "WebhookEndpoint")
    for endpoint in Endpoint.objects.exclude(previous_secrets=[]):
        newest = endpoint.previous_secrets[0]
        endpoint.previous_secret = newest["secret"]
        endpoint.previous_secret_expires_at = newest["expires_at"]
        endpoint.save(update_fields=["previous_secret", "previous_secret_expires_at"])


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="webhookendpoint",
            name="previous_secrets",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(_to_list, _to_one),
        migrations.RemoveField(model_name="webhookendpoint", name="previous_secret"),
        migrations.RemoveField(model_name="webhookendpoint", name="previous_secret_expires_at"),
    ]
