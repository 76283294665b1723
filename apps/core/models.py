from django.db import models


class BaseModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class RateLimitWindow(models.Model):
    """The current rate-limit window of a key (apps.core.ratelimit, when there is no Redis):
    one row per key, reused window after window. UNLOGGED (see the migration): a database
    crash only starts every window afresh."""

    key = models.CharField(max_length=100, primary_key=True)
    hits = models.IntegerField()
    resets_at = models.DateTimeField()

    class Meta:
        db_table = "core_rate_limit_window"

    def __str__(self) -> str:
        return f"{self.key}: {self.hits} until {self.resets_at:%H:%M:%S}"


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key: its request fingerprint and, once done, the response
    (`apps.core.idempotency`). The table was made by the ingestions app's migrations."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.IntegerField(null=True, blank=True)  # None: still in flight
    body = models.JSONField(null=True, blank=True)
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "idempotency_keys"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="idempotency_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status_code or 'in flight'})"
