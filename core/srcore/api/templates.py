"""TemplateService: operators' checker templates, and the conversions EdgeService shares."""

from __future__ import annotations

from serviceradar.admin.v1 import template_service_pb2 as pb
from serviceradar.admin.v1 import template_service_pb2_grpc as pb_grpc
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.api.paging import encode_token, page_size, text_key
from srcore.domain.templates import (
    Outcome,
    TemplateFormat,
    TemplateSource,
    TemplateVersion,
    name_prefix,
    template_name,
    template_spec,
)
from srcore.security.principal import caller, note
from srcore.store.templates import TemplateRepository

FORMATS: dict[pb.TemplateFormat.ValueType, TemplateFormat] = {
    pb.TEMPLATE_FORMAT_JSON: TemplateFormat.JSON,
    pb.TEMPLATE_FORMAT_TOML: TemplateFormat.TOML,
}
_PB_FORMATS = {fmt: value for value, fmt in FORMATS.items()}
_PB_SOURCES = {
    TemplateSource.EDGE: pb.TEMPLATE_SOURCE_EDGE,
    TemplateSource.OPERATOR: pb.TEMPLATE_SOURCE_OPERATOR,
}


def template_message(version: TemplateVersion) -> pb.Template:
    """The admin view of one template version."""
    return pb.Template(
        tenant=version.tenant,
        name=version.name,
        checker_type=version.checker_type,
        format=_PB_FORMATS[version.format],
        body=version.body,
        version=version.version,
        digest=version.digest,
        source=_PB_SOURCES[version.source],
        registered_by=version.registered_by,
        created_at=timestamp(version.created_at),
    )


class TemplateServicer(pb_grpc.TemplateServiceServicer):
    """Register, read, list and delete checker templates of the caller's tenant."""

    def __init__(self, repository: TemplateRepository, max_bytes: int) -> None:
        self._repository = repository
        self._max_bytes = max_bytes

    async def RegisterTemplate(
        self, request: pb.RegisterTemplateRequest, context: Context
    ) -> pb.RegisterTemplateResponse:
        """Validate and store a body; an identical body is a no-op."""
        principal = caller()
        tenant = principal.tenant_for(request.tenant)
        spec = template_spec(
            request.name, request.checker_type, FORMATS.get(request.format), request.body, self._max_bytes
        )
        [registered] = await self._repository.register(
            tenant, [spec], TemplateSource.OPERATOR, principal.actor
        )
        note(target=f"name={spec.name} version={registered.template.version}", tenant=tenant)
        return pb.RegisterTemplateResponse(
            template=template_message(registered.template),
            created=registered.outcome is Outcome.CREATED,
        )

    async def GetTemplate(self, request: pb.GetTemplateRequest, context: Context) -> pb.GetTemplateResponse:
        """The latest version, or the one asked for."""
        tenant = caller().tenant_for(request.tenant)
        name = template_name("name", request.name)
        found = await self._repository.get(tenant, name, request.version or None)
        return pb.GetTemplateResponse(template=template_message(found))

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: Context
    ) -> pb.ListTemplatesResponse:
        """One page of templates (latest versions), by name."""
        tenant = caller().tenant_for(request.tenant)
        prefix = name_prefix("prefix", request.prefix)
        size = page_size(request.page_size)
        key = text_key(request.page_token, 1)
        found = await self._repository.list_latest(tenant, prefix, size + 1, key[0] if key else None)
        more = len(found) > size
        found = found[:size]
        return pb.ListTemplatesResponse(
            templates=[template_message(v) for v in found],
            next_page_token=encode_token([found[-1].name]) if more else "",
        )

    async def DeleteTemplate(
        self, request: pb.DeleteTemplateRequest, context: Context
    ) -> pb.DeleteTemplateResponse:
        """Delete a template and all its versions."""
        tenant = caller().tenant_for(request.tenant)
        name = template_name("name", request.name)
        deleted = await self._repository.delete(tenant, name)
        return pb.DeleteTemplateResponse(versions_deleted=deleted)
