"""Checker templates over real mTLS: round trips in JSON and TOML, versions, listing by prefix,
deletion, validation with statuses naming the field, edge defaults that never replace an
operator's version, tenant isolation, and srctl."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from serviceradar.admin.v1 import template_service_pb2 as pb
from serviceradar.admin.v1 import template_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from srcore.domain.templates import TemplateFormat, check_schema, parse_body
from srcore.security.rbac import Role
from srctl.main import main
from tests.tenancy.support import Site

JSON, TOML = pb.TEMPLATE_FORMAT_JSON, pb.TEMPLATE_FORMAT_TOML
SNMP_JSON = json.dumps(
    {
        "targets": [
            {"name": "core-1", "host": "10.0.0.1", "community": "public", "oids": ["1.3.6.1.2.1.1.3.0"]}
        ]
    }
)
SWEEP_TOML = 'networks = ["10.0.0.0/24", "10.0.1.0/24"]\nports = [22, 443]\ninterval = "5m"\n'
PORT_JSON = '{"host": "db.example", "port": 5432}'


def register(
    name: str, body: str, kind: str = "snmp", fmt: int = JSON, tenant: str = ""
) -> pb.RegisterTemplateRequest:
    """A RegisterTemplateRequest."""
    return pb.RegisterTemplateRequest(tenant=tenant, name=name, checker_type=kind, format=fmt, body=body)  # type: ignore[arg-type]


def violated_field(error: grpc.aio.AioRpcError) -> str:
    """The field google.rpc.BadRequest names in an INVALID_ARGUMENT status."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    bad_request = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(raw).details[0].Unpack(bad_request)
    return str(bad_request.field_violations[0].field)


async def test_json_and_toml_round_trip_with_versions(site: Site) -> None:
    async with site.platform() as channel:
        stub = pb_grpc.TemplateServiceStub(channel)
        first = await stub.RegisterTemplate(register("snmp/core", SNMP_JSON))
        assert first.created and first.template.version == 1
        assert first.template.source == pb.TEMPLATE_SOURCE_OPERATOR
        assert first.template.registered_by.startswith("cert:")
        again = await stub.RegisterTemplate(register("snmp/core", SNMP_JSON))
        assert not again.created and again.template.version == 1

        changed = SNMP_JSON.replace("public", "private")
        second = await stub.RegisterTemplate(register("snmp/core", changed))
        assert second.created and second.template.version == 2
        assert second.template.digest != first.template.digest

        latest = await stub.GetTemplate(pb.GetTemplateRequest(name="snmp/core"))
        assert (latest.template.version, latest.template.body) == (2, changed)
        assert latest.template.format == JSON and latest.template.checker_type == "snmp"
        old = await stub.GetTemplate(pb.GetTemplateRequest(name="snmp/core", version=1))
        assert old.template.body == SNMP_JSON
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetTemplate(pb.GetTemplateRequest(name="snmp/core", version=3))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        toml = await stub.RegisterTemplate(register("sweep/lan", SWEEP_TOML, "sweep", TOML))
        assert toml.created
        got = await stub.GetTemplate(pb.GetTemplateRequest(name="sweep/lan"))
        assert (got.template.body, got.template.format, got.template.tenant) == (SWEEP_TOML, TOML, "default")
        # Only the format changed: a different registration, hence a new version.
        as_json = await stub.RegisterTemplate(register("sweep/lan", SWEEP_TOML, "custom", TOML))
        assert as_json.template.version == 2


async def test_list_by_prefix_pages_and_delete(site: Site) -> None:
    async with site.platform() as channel:
        stub = pb_grpc.TemplateServiceStub(channel)
        for name in ("snmp/c", "snmp/a", "snmp/b", "port/x", "snmpx"):
            await stub.RegisterTemplate(register(name, PORT_JSON, "port"))
        await stub.RegisterTemplate(register("snmp/a", '{"host": "h", "port": 1}', "port"))

        page = await stub.ListTemplates(pb.ListTemplatesRequest(prefix="snmp/", page_size=2))
        assert [(t.name, t.version) for t in page.templates] == [("snmp/a", 2), ("snmp/b", 1)]
        rest = await stub.ListTemplates(
            pb.ListTemplatesRequest(prefix="snmp/", page_size=2, page_token=page.next_page_token)
        )
        assert [t.name for t in rest.templates] == ["snmp/c"] and not rest.next_page_token
        everything = await stub.ListTemplates(pb.ListTemplatesRequest())
        assert [t.name for t in everything.templates] == ["port/x", "snmp/a", "snmp/b", "snmp/c", "snmpx"]

        deleted = await stub.DeleteTemplate(pb.DeleteTemplateRequest(name="snmp/a"))
        assert deleted.versions_deleted == 2
        for call in (
            stub.GetTemplate(pb.GetTemplateRequest(name="snmp/a")),
            stub.DeleteTemplate(pb.DeleteTemplateRequest(name="snmp/a")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await call
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        # A deleted name starts again at version 1.
        again = await stub.RegisterTemplate(register("snmp/a", PORT_JSON, "port"))
        assert again.template.version == 1


BAD = [
    (register("t", '{"host": "h", "port": ', "port"), "body", "not valid JSON"),
    (register("t", "[1, 2]", "custom"), "body", "object"),
    (register("t", "networks = [", "sweep", TOML), "body", "not valid TOML"),
    (register("t", '{"host": "h"}', "port"), "body.port", "required"),
    (register("t", '{"host": "h", "port": "443"}', "port"), "body.port", "integer"),
    (register("t", '{"host": "h", "port": true}', "port"), "body.port", "integer"),
    (register("t", '{"targets": [{"name": "x"}]}', "snmp"), "body.targets[0].host", "required"),
    (register("t", 'networks = ["10.0.0.0/8", 7]', "sweep", TOML), "body.networks[1]", "string"),
    (register("t", PORT_JSON, "port", 0), "format", "JSON or TOML"),
    (register("t", PORT_JSON, "port", 7), "format", "JSON or TOML"),
    (register("t", json.dumps({"pad": "x" * 70_000}), "custom"), "body", "over the limit"),
    (register("bad name!", PORT_JSON, "port"), "name", "characters"),
    (register("t", PORT_JSON, "Port"), "checker_type", "characters"),
    (register("t", "", "port"), "body", "required"),
]


async def test_bad_templates_are_invalid_argument_naming_the_field(site: Site) -> None:
    async with site.platform() as channel:
        stub = pb_grpc.TemplateServiceStub(channel)
        for request, field, problem in BAD:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RegisterTemplate(request)
            error = caught.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
            assert violated_field(error) == field, error.details()
            assert problem in (error.details() or ""), error.details()
        listed = await stub.ListTemplates(pb.ListTemplatesRequest())
        assert not listed.templates, "nothing invalid was stored"


def test_unknown_checker_types_only_need_a_well_formed_body() -> None:
    document = parse_body("body", TemplateFormat.TOML, "anything = 1\n[deep]\nkey = 'v'\n")
    check_schema("body", "my-checker", document)
    assert document["deep"] == {"key": "v"}


def defaults(*templates: tuple[str, str, str]) -> edge_pb.RegisterTemplatesRequest:
    """An edge's RegisterTemplates of (name, checker type, JSON body)."""
    return edge_pb.RegisterTemplatesRequest(
        poller_id="edge-1",
        templates=[
            edge_pb.TemplateDefault(name=n, checker_type=k, format=edge_pb.TEMPLATE_FORMAT_JSON, body=b)
            for n, k, b in templates
        ],
    )


async def test_edge_defaults_never_replace_an_operators_version(site: Site) -> None:
    await site.create_tenant("alpha")
    certificate = site.edge_cert("alpha", "edge-1")
    v1, v2, v9 = PORT_JSON, '{"host": "db.example", "port": 6432}', '{"host": "db.example", "port": 9}'
    async with site.edge(certificate) as edge, site.platform() as channel:
        admin = pb_grpc.TemplateServiceStub(channel)
        first = await edge.RegisterTemplates(
            defaults(("port/db", "port", v1), ("icmp/gw", "icmp", '{"host": "gw"}'))
        )
        assert [(r.name, r.outcome, r.version) for r in first.templates] == [
            ("port/db", edge_pb.TEMPLATE_OUTCOME_CREATED, 1),
            ("icmp/gw", edge_pb.TEMPLATE_OUTCOME_CREATED, 1),
        ]
        stored = await admin.GetTemplate(pb.GetTemplateRequest(tenant="alpha", name="port/db"))
        assert stored.template.source == pb.TEMPLATE_SOURCE_EDGE
        assert stored.template.registered_by == "poller:edge-1"
        # The tenant comes from the certificate: nothing landed in the default tenant.
        assert not (await admin.ListTemplates(pb.ListTemplatesRequest())).templates

        restart = await edge.RegisterTemplates(defaults(("port/db", "port", v1)))
        assert restart.templates[0].outcome == edge_pb.TEMPLATE_OUTCOME_UNCHANGED
        upgrade = await edge.RegisterTemplates(defaults(("port/db", "port", v2)))
        assert (upgrade.templates[0].outcome, upgrade.templates[0].version) == (
            edge_pb.TEMPLATE_OUTCOME_CREATED,
            2,
        )

        operator = await admin.RegisterTemplate(register("port/db", v9, "port", tenant="alpha"))
        assert operator.template.version == 3
        kept = await edge.RegisterTemplates(defaults(("port/db", "port", v1)))
        assert (kept.templates[0].outcome, kept.templates[0].version) == (
            edge_pb.TEMPLATE_OUTCOME_OPERATOR_KEPT,
            3,
        )
        latest = await admin.GetTemplate(pb.GetTemplateRequest(tenant="alpha", name="port/db"))
        assert (latest.template.body, latest.template.source) == (v9, pb.TEMPLATE_SOURCE_OPERATOR)

        # All or nothing: one bad default stores none, and the status names it.
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await edge.RegisterTemplates(
                defaults(("new/one", "port", v1), ("new/two", "port", '{"host": 1}'))
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_field(bad.value) == "templates[1].body.host"
        with pytest.raises(grpc.aio.AioRpcError) as absent:
            await admin.GetTemplate(pb.GetTemplateRequest(tenant="alpha", name="new/one"))
        assert absent.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as duplicate:
            await edge.RegisterTemplates(defaults(("d", "port", v1), ("d", "port", v2)))
        assert violated_field(duplicate.value) == "templates[1].name"

        request = defaults(("port/db", "port", v1))
        request.poller_id = "someone-else"
        with pytest.raises(grpc.aio.AioRpcError) as impostor:
            await edge.RegisterTemplates(request)
        assert impostor.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_templates_are_isolated_between_tenants(site: Site) -> None:
    for tenant in ("alpha", "beta"):
        await site.create_tenant(tenant)
    a_admin = await site.create_token("alpha", Role.ADMIN)
    b_admin = await site.create_token("beta", Role.ADMIN)
    b_viewer = await site.create_token("beta", Role.VIEWER)
    async with site.admin_port(a_admin.secret) as channel:
        await pb_grpc.TemplateServiceStub(channel).RegisterTemplate(register("secret/a", PORT_JSON, "port"))
    async with site.admin_port(b_admin.secret) as channel:
        stub = pb_grpc.TemplateServiceStub(channel)
        await stub.RegisterTemplate(register("secret/a", '{"host": "beta", "port": 1}', "port"))
        mine = await stub.GetTemplate(pb.GetTemplateRequest(name="secret/a"))
        assert (mine.template.tenant, mine.template.body) == ("beta", '{"host": "beta", "port": 1}')
        listed = await stub.ListTemplates(pb.ListTemplatesRequest())
        assert [t.tenant for t in listed.templates] == ["beta"]
        for call in (
            stub.GetTemplate(pb.GetTemplateRequest(tenant="alpha", name="secret/a")),
            stub.ListTemplates(pb.ListTemplatesRequest(tenant="alpha")),
            stub.DeleteTemplate(pb.DeleteTemplateRequest(tenant="alpha", name="secret/a")),
            stub.RegisterTemplate(register("secret/a", PORT_JSON, "port", tenant="alpha")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        await stub.DeleteTemplate(pb.DeleteTemplateRequest(name="secret/a"))
    async with site.admin_port(b_viewer.secret) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await pb_grpc.TemplateServiceStub(channel).RegisterTemplate(register("x", PORT_JSON, "port"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with site.admin_port(a_admin.secret) as channel:
        alpha = await pb_grpc.TemplateServiceStub(channel).GetTemplate(pb.GetTemplateRequest(name="secret/a"))
        assert alpha.template.body == PORT_JSON, "beta's delete left alpha's template alone"


async def test_srctl_templates_register_get_list_delete(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("SRCTL_")]:
        monkeypatch.delenv(name)
    connection = ["--server", site.core.address, "--data-dir", str(site.core.data_dir)]

    async def srctl(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, [*connection, *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    sweep = tmp_path / "lan.toml"
    sweep.write_text(SWEEP_TOML)
    code, out, _ = await srctl("templates", "register", "sweep/lan", "--type", "sweep", "-f", str(sweep))
    assert (code, out) == (0, "sweep/lan: registered version 1\n")
    code, out, _ = await srctl("templates", "register", "sweep/lan", "--type", "sweep", "-f", str(sweep))
    assert (code, out) == (0, "sweep/lan: unchanged: the latest version is 1\n")

    code, out, _ = await srctl("templates", "get", "sweep/lan", "--body-only")
    assert (code, out) == (0, SWEEP_TOML)
    code, out, _ = await srctl("templates", "get", "sweep/lan")
    assert code == 0 and "Checker type:" in out and "sweep" in out and 'networks = ["10.0.0.0/24"' in out

    code, out, _ = await srctl("templates", "list", "--prefix", "sweep/", "-o", "json")
    listed = json.loads(out)["templates"]
    assert [(t["name"], t["version"], t["format"]) for t in listed] == [
        ("sweep/lan", 1, "TEMPLATE_FORMAT_TOML")
    ]

    broken = tmp_path / "broken.json"
    broken.write_text('{"host": "x"}')
    code, _, err = await srctl("templates", "register", "port/x", "--type", "port", "-f", str(broken))
    assert code == 1 and "body.port" in err
    code, _, err = await srctl(
        "templates", "register", "x", "--type", "port", "-f", str(tmp_path / "none.json")
    )
    assert code == 2 and "none.json" in err
    unknown = tmp_path / "body.yaml"
    unknown.write_text("a: 1\n")
    code, _, err = await srctl("templates", "register", "x", "--type", "port", "-f", str(unknown))
    assert code == 2 and "--format" in err

    code, out, _ = await srctl("templates", "delete", "sweep/lan")
    assert (code, out) == (0, "sweep/lan: deleted 1 version(s)\n")
    code, _, _ = await srctl("templates", "get", "sweep/lan")
    assert code == 4
