from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from apps.core.ratelimit import limit_redis_url, parse_rate
from apps.tenants.services import tenant_from_api_key_counted


class TenantUser:
    """Stands in for a Django user: a request authenticated by a tenant's API key."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, tenant):
        self.tenant = tenant

    def __str__(self) -> str:
        return f"tenant:{self.tenant.id}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`X-API-Key: <key>` -> (TenantUser, tenant). Missing or wrong keys are 401."""

    header = "HTTP_X_API_KEY"

    def authenticate(self, request):
        raw = request.META.get(self.header)
        if not raw:
            raise exceptions.NotAuthenticated("Send your API key in the X-API-Key header.")
        # Counted with the key's lookup, one round trip, when PostgreSQL keeps the counts
        # (`RATE_LIMIT_STORE`): every view a key opens is throttled (`KeyRateThrottle`),
        # which then reads the outcome from the request instead of counting again.
        rate = None if limit_redis_url() else parse_rate(settings.API_RATE_LIMIT)
        found = tenant_from_api_key_counted(raw_key=raw.strip(), rate=rate)
        if found.tenant is None:
            raise exceptions.AuthenticationFailed("The API key is unknown or revoked.")
        if found.rate_limit is not None:
            request.rate_limit_counted = found.rate_limit
        return TenantUser(found.tenant), found.tenant

    def authenticate_header(self, request) -> str:
        return "X-API-Key"


class IsTenant(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, TenantUser)
