"""The API key as an OpenAPI security scheme (drf-spectacular finds the extension once this
module is imported: `TenantsConfig.ready`), so clients and Swagger UI's Authorize button
know it once, instead of an `X-API-Key` parameter on every operation."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "the tenant's API key (`manage.py create_tenant` or "
            "`rotate_api_key` prints it once)",
        }
