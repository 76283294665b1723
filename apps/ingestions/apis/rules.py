"""A tenant's validation rules per record type (versions: PUT adds one, DELETE ends the
current one), and the warnings of an upload's rows.

Rule documents keep their numbers exact: parsed as decimals, stored as sent, answered as
numbers (`apps.core.exactjson`): a rule's `"maximum": 19.99` is 19.99, not a float near it.
"""

from __future__ import annotations

from django.db import transaction
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from apps.core.api import PAGE_PARAMETERS, Pagination, TenantApiView, problem_responses
from apps.core.errors import NotFoundError
from apps.core.exactjson import ExactEncoder, ExactJSONParser, ExactJSONRenderer
from apps.ingestions.engine import RECORDS, RULE_ACTIONS, UNKNOWN_FIELDS
from apps.ingestions.presenters import WarningOutputSerializer
from apps.ingestions.selectors import rules_history, upload_get, warning_list
from apps.ingestions.services import rules_end, rules_put

_TYPE = OpenApiParameter(
    "record_type", str, OpenApiParameter.PATH, enum=list(RECORDS), description="the record type"
)
HISTORY_LIMIT = 100  # versions shown in a type's history, newest first

_EXAMPLE = {
    "schema": {
        "properties": {
            "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
            "unit_price": {"exclusiveMinimum": 0},
        }
    },
    "action": "reject",
    "unknown_fields": "reject",
}


class RuleInputSerializer(serializers.Serializer):
    schema = serializers.JSONField(
        encoder=ExactEncoder,
        help_text="a JSON Schema (2020-12 unless `$schema` names another draft) that rows of "
        "the type must also satisfy; no remote `$ref`; `pattern`s without lookaround or "
        "backreferences; `format` is checked",
    )
    action = serializers.ChoiceField(
        RULE_ACTIONS,
        default="reject",
        help_text="`reject`: a violation is a `rule_violation` reject; `warn`: the row loads "
        "and the warning is recorded",
    )
    unknown_fields = serializers.ChoiceField(
        UNKNOWN_FIELDS,
        default="ignore",
        help_text="`reject`: a field the contract does not know is an `unknown_field` reject",
    )


class RuleOutputSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    schema = serializers.JSONField()
    action = serializers.ChoiceField(RULE_ACTIONS)
    unknown_fields = serializers.ChoiceField(UNKNOWN_FIELDS)
    created_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True, help_text="null while current")


class RulesOutputSerializer(serializers.Serializer):
    type = serializers.CharField()
    url = serializers.CharField()
    current = RuleOutputSerializer(allow_null=True, help_text="null: the contract alone")
    versions = serializers.IntegerField(help_text="how many versions there have been")
    history = RuleOutputSerializer(
        many=True, help_text=f"the last {HISTORY_LIMIT} versions, newest first"
    )


def _rules_data(request, tenant, record_type: str) -> dict:
    versions = list(rules_history(tenant=tenant, record_type=record_type)[:HISTORY_LIMIT])
    current = versions[0] if versions and versions[0].ended_at is None else None
    count = versions[0].version if versions else 0
    rule = RuleOutputSerializer
    return {
        "type": record_type,
        "url": request.build_absolute_uri(reverse("rules-detail", args=[record_type])),
        "current": rule(current).data if current is not None else None,
        "versions": count,
        "history": rule(versions, many=True).data,
    }


def _record_type(record_type: str) -> str:
    if record_type not in RECORDS:
        raise NotFoundError(f"No record type {record_type!r}; the types are {', '.join(RECORDS)}.")
    return record_type


class _RulesView(TenantApiView):
    parser_classes = [ExactJSONParser]
    renderer_classes = [ExactJSONRenderer]


class RulesListApi(_RulesView):
    @extend_schema(
        operation_id="rules_list",
        summary="List the tenant's current validation rules",
        tags=["rules"],
        description="The current rules of every record type (null: the contract alone).",
        responses={200: OpenApiTypes.OBJECT, **problem_responses(401, 429)},
    )
    def get(self, request):
        current = {name: None for name in RECORDS}
        for rule in rules_history(tenant=self.tenant).filter(ended_at__isnull=True):
            current[rule.record_type] = RuleOutputSerializer(rule).data
        return Response({"rules": current})


class RulesDetailApi(_RulesView):
    @extend_schema(
        operation_id="rules_retrieve",
        summary="Get a type's validation rules and their history",
        tags=["rules"],
        description="The type's current rules and their history.",
        parameters=[_TYPE],
        responses={200: RulesOutputSerializer, **problem_responses(401, 404, 429)},
    )
    def get(self, request, record_type: str):
        return Response(_rules_data(request, self.tenant, _record_type(record_type)))

    @extend_schema(
        operation_id="rules_update",
        summary="Set a type's validation rules (a new version)",
        tags=["rules"],
        description="Set the type's rules: a new version, checked from the next upload or "
        "batch on (an upload records the version it was validated with). A schema that is "
        "not valid JSON Schema, or that needs a remote `$ref` or a backtracking pattern, is a "
        "400 with the reason.",
        parameters=[_TYPE],
        request=RuleInputSerializer,
        examples=[OpenApiExample("order items", value=_EXAMPLE, request_only=True)],
        responses={200: RulesOutputSerializer, **problem_responses(400, 401, 404, 429)},
    )
    def put(self, request, record_type: str):
        record_type = _record_type(record_type)
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        unknown = sorted(set(request.data) - set(RuleInputSerializer().fields))
        if unknown:
            raise ValidationError({name: ["Unknown field."] for name in unknown})
        data = RuleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # read back under the writers' lock it takes: the answer is this PUT's version,
        # current, not one another writer put since
        with transaction.atomic():
            rules_put(tenant=self.tenant, record_type=record_type, **data.validated_data)
            answer = _rules_data(request, self.tenant, record_type)
        return Response(answer)

    @extend_schema(
        operation_id="rules_destroy",
        summary="End a type's validation rules",
        tags=["rules"],
        description="End the type's current rules: rows meet the contract alone from now on. "
        "The history stays.",
        parameters=[_TYPE],
        responses={204: None, **problem_responses(401, 404, 429)},
    )
    def delete(self, request, record_type: str):
        rules_end(tenant=self.tenant, record_type=_record_type(record_type))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UploadWarningsApi(TenantApiView):
    pagination_class = Pagination  # documents the paginated answer

    @extend_schema(
        operation_id="uploads_warnings",
        summary="List an upload's rows loaded with warnings",
        description="The upload's rows loaded with warnings (of rules whose action is `warn`), "
        "by line.",
        parameters=[*PAGE_PARAMETERS],
        responses={200: WarningOutputSerializer(many=True), **problem_responses(401, 404, 429)},
    )
    def get(self, request, upload_id):
        upload = upload_get(tenant=self.tenant, upload_id=upload_id)
        if upload is None:
            raise NotFound("No such upload.")
        warnings = warning_list(tenant=self.tenant, upload=upload).values(
            "line", "field", "code", "message", "errors"
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(warnings, request, view=self)
        return paginator.get_paginated_response(WarningOutputSerializer(page, many=True).data)
