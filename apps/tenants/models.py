import uuid

from django.db import models
from django.db.models.functions import Lower

from apps.core.models import BaseModel


class Tenant(BaseModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    # Moved by every change to the tenant's validation rules, in the change's transaction
    # (apps.ingestions.services.rules): read with the tenant on each request, it lets a
    # process keep the rules it compiled until it moves, instead of asking each time.
    rules_serial = models.BigIntegerField(default=0, editable=False)

    class Meta:
        db_table = "tenants"
        constraints = [
            # "Acme" and "ACME" are one name: commands find a tenant by its name, either way
            models.UniqueConstraint(
                Lower("name"),
                name="tenants_name_unique_ci",
                violation_error_message="A tenant with this name exists (names ignore case).",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class ApiKey(BaseModel):
    """An API key, stored as a public lookup prefix plus a SHA-256 of the whole key.

    Keys are 256-bit random secrets, so a fast hash is enough (no password stretching
    needed); the raw key is shown once, when created.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "api_keys"
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"ck_{self.prefix}_… ({'revoked' if self.revoked_at else 'active'})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
