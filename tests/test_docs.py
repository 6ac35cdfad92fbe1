"""Every error code, setting, endpoint, CLI command and event kind is documented (STYLE P5, P7, §2.5).

Pure: reads the docs and builds a bare aiohttp Application to list the routes; no network.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest
from aiohttp import web

import ledger.errors
from ledger.errors import CODES
from ledger.events import KINDS
from node import __version__
from node.app import add_gateway_routes, add_routes
from node.clock import SystemClock
from node.config import Config
from node.gateway import Gateway
from node.cli import parser
from node.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "api.md"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
OPENAPI_JSON = ROOT / "node" / "openapi.json"
# Statuses that the one error renderer (node/api/errors.py) gives instead of the class's hint.
RENDERED_STATUS = {"method_not_allowed": 405, "not_found": 404, "expectation_failed": 417}


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _openapi() -> dict:
    return json.loads(_read(OPENAPI_JSON))


def _path(canonical: str) -> str:
    """aiohttp's `/x/{name:regex}` → OpenAPI's `/x/{name}`."""
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", r"{\1}", canonical)


def _routes() -> list[tuple[str, str]]:
    app = web.Application()
    add_routes(app)
    add_gateway_routes(app, Gateway(Config(), None, SystemClock()))  # served when llm_gateway is on
    return sorted(
        {(r.method, _path(r.resource.canonical)) for r in app.router.routes() if r.method != "HEAD" and r.resource}
    )


def _table_row(text: str, key: str) -> list[str] | None:
    """The cells of the markdown table row whose first cell is `key` (in backticks)."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0] == f"`{key}`":
            return cells
    return None


@pytest.mark.parametrize("code", list(CODES))
def test_every_error_code_is_in_the_api_docs_with_its_status(code: str) -> None:
    row = _table_row(_read(API_MD), code)
    assert row is not None, f"docs/api.md has no error table row for `{code}`"
    status = RENDERED_STATUS.get(code, getattr(ledger.errors, CODES[code]).status_hint)
    assert row[1] == str(status), f"`{code}` is documented with status {row[1]}, the code gives {status}"


def _toml(value: object) -> str:
    """A default as the docs write it: TOML's `true` and `[...]`, other values as they print."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return str(value)


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_is_in_the_api_docs_with_its_default_and_env_name(setting) -> None:
    text = _read(API_MD)
    row = _table_row(text, setting.name)
    assert row is not None, f"docs/api.md has no settings table row for `{setting.name}`"
    default = f"`{_toml(setting.default)}`"
    assert default in row[1], f"default of {setting.name} should read {default}, the docs say {row[1]}"
    assert f"ATS_{setting.name.upper()}" in text


def test_every_route_is_in_the_api_docs_and_in_openapi() -> None:
    text, paths = _read(API_MD), _openapi()["paths"]
    routes = _routes()
    assert routes, "add_routes registered nothing"
    for method, path in routes:
        assert f"{method} {path}" in text, f"docs/api.md does not document {method} {path}"
        assert method.lower() in paths.get(path, {}), f"node/openapi.json lacks {method} {path}"
    documented = {(m.upper(), p) for p, ops in paths.items() for m in ops if m != "parameters"}
    assert documented == set(routes), "node/openapi.json describes routes the node does not have"


def test_openapi_document_is_3_1_with_this_version_and_the_error_shape() -> None:
    doc = _openapi()
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["version"] == __version__
    components = doc["components"]
    error = components["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"code", "message"}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            responses = {s: components["responses"][r["$ref"].rsplit("/", 1)[1]] if "$ref" in r else r
                         for s, r in op["responses"].items()}
            assert "500" in responses
            if "429" in responses:
                assert "Retry-After" in responses["429"]["headers"]
            if "requestBody" in op and not path.startswith(("/llm/", "/v1/tasks")):  # JSON-only paths
                assert {"application/cbor", "application/json"} <= set(op["requestBody"]["content"])


def test_openapi_document_validates() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(_openapi())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_event_kind_and_body_key_is_in_the_protocol_docs(kind: str) -> None:
    text = _read(PROTOCOL_MD)
    assert f"`{kind}`" in text
    for field in dataclasses.fields(KINDS[kind]):
        assert f"`{field.name}`" in text, f"body key {field.name} of {kind} is not in docs/protocol.md"


def test_every_cli_command_is_in_the_api_docs() -> None:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = _read(API_MD)
    for name in sub.choices:
        assert f"ats {name}" in text, f"docs/api.md does not document `ats {name}`"


def test_readme_links_the_protocol_and_api_docs() -> None:
    readme = ROOT / "README.md"
    assert readme.exists(), "README.md is missing"
    text = _read(readme)
    assert "docs/protocol.md" in text and "docs/api.md" in text
