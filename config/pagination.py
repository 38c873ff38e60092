"""One page of a list endpoint, and its shape in the OpenAPI schema."""

from __future__ import annotations

from functools import cache

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.validation import query_int

MAX_PAGE_SIZE = 1000


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """`?limit=&offset=`: limit at most MAX_PAGE_SIZE; a limit or offset that is not a whole
    number in range is a 400 (DRF would fall back silently, or fail on a huge offset)."""

    max_limit = MAX_PAGE_SIZE

    def get_limit(self, request: Request) -> int | None:
        limit = query_int(request.query_params, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, MAX_PAGE_SIZE)

    def get_offset(self, request: Request) -> int:
        return query_int(request.query_params, self.offset_query_param) or 0


def paginated_response(
    request: Request, view: APIView, rows: QuerySet, serializer_class: type[serializers.Serializer]
) -> Response:
    """`?limit=&offset=` over `rows`: {count, next, previous, results}."""
    paginator = BoundedLimitOffsetPagination()
    page = paginator.paginate_queryset(rows, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


@cache
def paginated(serializer_class: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The schema of a page of `serializer_class` rows, so generated clients type it right."""
    name = serializer_class.__name__.removesuffix("Serializer").removesuffix("Output")
    return type(
        f"Paginated{name}List",
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )
