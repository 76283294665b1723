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
