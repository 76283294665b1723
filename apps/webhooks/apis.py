"""Webhook endpoints (register, list, show, change, delete, rotate the secret, test) and
their delivery log (list, redeliver), under /api/v1/webhooks/."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
)
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from apps.core.api import (
    PAGE_PARAMETERS,
    Pagination,
    TenantApiView,
    idempotent_response,
    problem_responses,
)
from apps.core.idempotency import Answer, idempotent, request_fingerprint
from apps.webhooks.models import WebhookEndpoint
from apps.webhooks.selectors import delivery_get, delivery_list, endpoint_get, endpoint_list
from apps.webhooks.serializers import (
    CREATE_EXAMPLES,
    DeliveryOutputSerializer,
    EndpointCreateInputSerializer,
    EndpointOutputSerializer,
    EndpointSecretOutputSerializer,
    EndpointUpdateInputSerializer,
)
from apps.webhooks.services import (
    delivery_redeliver,
    endpoint_create,
    endpoint_delete,
    endpoint_secret_rotate,
    endpoint_test,
    endpoint_update,
)

_TAGS = ["webhooks"]
_ID = OpenApiParameter(
    "endpoint_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="the endpoint's id"
)
_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="as for uploads: the same key and body replay the first answer for 24 h",
)


def _input(serializer_class, request) -> dict:
    if not isinstance(request.data, dict):
        raise ValidationError({"non_field_errors": ["The body must be a JSON object."]})
    unknown = sorted(set(request.data) - set(serializer_class().fields))
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in unknown})
    data = serializer_class(data=request.data)
    data.is_valid(raise_exception=True)
    return data.validated_data


class _EndpointView(TenantApiView):
    def endpoint(self, endpoint_id) -> WebhookEndpoint:
        endpoint = endpoint_get(tenant=self.tenant, endpoint_id=endpoint_id)
        if endpoint is None:
            raise NotFound("No such webhook endpoint.")
        return endpoint

    def output(self, endpoint: WebhookEndpoint, serializer=EndpointOutputSerializer) -> dict:
        return serializer(endpoint, context={"request": self.request}).data

    def once(self, request, make: Callable[[], tuple[int, dict]]) -> Response:
        """A POST answered once per `Idempotency-Key`, as an upload is (SPEC 5): its work
        and its answer's storing commit together; the same key and body again replay the
        answer (the secret of an endpoint it made included), another body is 422."""
        key = request.headers.get("Idempotency-Key")

        def run() -> tuple[Answer, str]:
            status_code, body = make()
            return Answer(status_code, body, {}), fingerprint() if key is not None else ""

        def fingerprint() -> str:
            data = json.dumps(request.data, sort_keys=True, separators=(",", ":"))
            sha256 = hashlib.sha256(data.encode()).hexdigest()
            return request_fingerprint(
                method=request.method, path=request.path, sha256=sha256, params={}
            )

        answer, replayed = idempotent(
            tenant=self.tenant, key=key, run=run, fingerprint_of=fingerprint, together=True
        )
        return idempotent_response(answer, replayed=replayed)


class WebhookListApi(_EndpointView):
    pagination_class = Pagination  # documents the paginated answer

    @extend_schema(
        operation_id="webhooks_list",
        summary="List webhook endpoints",
        tags=_TAGS,
        description="The tenant's webhook endpoints (never their secrets).",
        parameters=[*PAGE_PARAMETERS],
        responses={200: EndpointOutputSerializer(many=True), **problem_responses(400, 401, 429)},
    )
    def get(self, request):
        paginator = Pagination()
        page = paginator.paginate_queryset(endpoint_list(tenant=self.tenant), request, view=self)
        return paginator.get_paginated_response(
            EndpointOutputSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(
        operation_id="webhooks_create",
        summary="Register a webhook endpoint (its secret shown once)",
        tags=_TAGS,
        description="Register an endpoint. The answer carries its signing `secret`, shown "
        "this once. Events are signed per the Standard Webhooks specification.",
        request=EndpointCreateInputSerializer,
        parameters=[_KEY],
        responses={
            201: EndpointSecretOutputSerializer,
            **problem_responses(400, 401, 409, 413, 415, 422, 429),
        },
        examples=CREATE_EXAMPLES,
    )
    def post(self, request):
        def make():
            data = _input(EndpointCreateInputSerializer, request)
            endpoint = endpoint_create(tenant=self.tenant, **data)
            return 201, self.output(endpoint, EndpointSecretOutputSerializer)

        return self.once(request, make)


class WebhookDetailApi(_EndpointView):
    @extend_schema(
        operation_id="webhooks_retrieve",
        summary="Get a webhook endpoint",
        tags=_TAGS,
        parameters=[_ID],
        responses={200: EndpointOutputSerializer, **problem_responses(401, 404, 429)},
    )
    def get(self, request, endpoint_id):
        return Response(self.output(self.endpoint(endpoint_id)))

    @extend_schema(
        operation_id="webhooks_partial_update",
        summary="Change a webhook endpoint's URL, events or state",
        tags=_TAGS,
        description="Change the endpoint's `url`, `events`, `description` or `enabled`.",
        parameters=[_ID],
        request=EndpointUpdateInputSerializer,
        responses={
            200: EndpointOutputSerializer,
            **problem_responses(400, 401, 404, 413, 415, 429),
        },
    )
    def patch(self, request, endpoint_id):
        endpoint = self.endpoint(endpoint_id)
        data = _input(EndpointUpdateInputSerializer, request)
        return Response(self.output(endpoint_update(endpoint=endpoint, **data)))

    @extend_schema(
        operation_id="webhooks_destroy",
        summary="Delete a webhook endpoint",
        tags=_TAGS,
        description="Delete the endpoint and its delivery log; nothing more is sent to it.",
        parameters=[_ID],
        responses={204: None, **problem_responses(401, 404, 429)},
    )
    def delete(self, request, endpoint_id):
        endpoint_delete(endpoint=self.endpoint(endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretApi(_EndpointView):
    @extend_schema(
        operation_id="webhooks_rotate_secret",
        summary="Rotate an endpoint's signing secret",
        tags=_TAGS,
        description="A new signing secret, shown this once. The old one keeps signing beside "
        "it (two signatures in `webhook-signature`) for 24 hours.",
        parameters=[_ID, _KEY],
        request=None,
        responses={
            200: EndpointSecretOutputSerializer,
            **problem_responses(400, 401, 404, 409, 422, 429),
        },
    )
    def post(self, request, endpoint_id):
        def make():
            endpoint = endpoint_secret_rotate(endpoint=self.endpoint(endpoint_id))
            return 200, self.output(endpoint, EndpointSecretOutputSerializer)

        return self.once(request, make)


class WebhookTestApi(_EndpointView):
    @extend_schema(
        operation_id="webhooks_test",
        summary="Send a test event to an endpoint",
        tags=_TAGS,
        description="Send the endpoint a `webhook.test` event (whatever its events); 202 with "
        "the delivery, which the delivery log follows.",
        parameters=[_ID, _KEY],
        request=None,
        responses={
            202: DeliveryOutputSerializer,
            **problem_responses(400, 401, 404, 409, 422, 429),
        },
    )
    def post(self, request, endpoint_id):
        def make():
            delivery = endpoint_test(endpoint=self.endpoint(endpoint_id))
            return 202, DeliveryOutputSerializer(delivery).data

        return self.once(request, make)


class WebhookDeliveryListApi(_EndpointView):
    pagination_class = Pagination  # documents the paginated answer

    @extend_schema(
        operation_id="webhooks_deliveries",
        summary="List an endpoint's deliveries",
        tags=_TAGS,
        description="The endpoint's deliveries, newest first: attempts, the last status code, "
        "latency and error, and when the next retry is due.",
        parameters=[_ID, *PAGE_PARAMETERS],
        responses={
            200: DeliveryOutputSerializer(many=True),
            **problem_responses(400, 401, 404, 429),
        },
    )
    def get(self, request, endpoint_id):
        endpoint = self.endpoint(endpoint_id)
        paginator = Pagination()
        deliveries = delivery_list(tenant=self.tenant, endpoint=endpoint)
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(DeliveryOutputSerializer(page, many=True).data)


class WebhookRedeliverApi(_EndpointView):
    @extend_schema(
        operation_id="webhooks_redeliver",
        summary="Send a delivery's event again",
        tags=_TAGS,
        description="Send the delivery's event to the endpoint again, as a new delivery (same "
        "`webhook-id`); 202 with it.",
        parameters=[
            _ID,
            OpenApiParameter("delivery_id", int, OpenApiParameter.PATH, description="its id"),
            _KEY,
        ],
        request=None,
        responses={
            202: DeliveryOutputSerializer,
            **problem_responses(400, 401, 404, 409, 422, 429),
        },
    )
    def post(self, request, endpoint_id, delivery_id):
        endpoint = self.endpoint(endpoint_id)
        delivery = delivery_get(tenant=self.tenant, endpoint=endpoint, delivery_id=delivery_id)
        if delivery is None:
            raise NotFound("No such delivery.")

        def make():
            again = delivery_redeliver(delivery=delivery)
            again = delivery_get(tenant=self.tenant, endpoint=endpoint, delivery_id=again.id)
            return 202, DeliveryOutputSerializer(again).data

        return self.once(request, make)
