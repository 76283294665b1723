from rest_framework import authentication, exceptions, permissions

from apps.tenants.services import tenant_from_api_key


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
        tenant = tenant_from_api_key(raw_key=raw.strip())
        if tenant is None:
            raise exceptions.AuthenticationFailed("The API key is unknown or revoked.")
        return TenantUser(tenant), tenant

    def authenticate_header(self, request) -> str:
        return "X-API-Key"


class IsTenant(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, TenantUser)
