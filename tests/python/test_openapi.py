"""The admin API's OpenAPI contract (docs/openapi.json) against the live server.

- The node serves the repository's document at GET /v1/openapi.json (no token), and it is a
  valid OpenAPI 3 document (openapi-spec-validator).
- schemathesis (property-based: examples, boundary coverage, random fuzzing, and the stateful
  phase following the link POST /v1/sessions -> DELETE /v1/sessions/{id}) runs every operation
  of the document against a running node with sessions, a token and history on, and checks
  that no answer is a 5xx, that every status, content type and JSON body is one the document
  gives, that requests the schema calls invalid are refused, and that no protected operation
  answers without the token. The node must still be up, ready and panic-free afterwards.

Every operation is fuzzed, none is excluded: the admin API has no drain or shutdown operation
(those are SIGTERM), POST /v1/config/reload re-reads the unchanged configuration file (so it
changes nothing), and DELETE /v1/sessions/{id} only ends sessions the fuzzer minted itself.
What fuzzing does not reach (a reload of a broken or changed file, a body over the 2 MiB
limit, an id that is not UTF-8) is checked against the document below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from helpers import (ROOT, SESSION_KEY_A, Admin, push_servers,  # noqa: F401  (fixture)
                     render_config, session_config, wait_sockets, ws_sync_connect, ws_url)

DOC_PATH = ROOT / "docs" / "openapi.json"
TOKEN = "5b0e3c9a1f7d42e8a6c4b2d0e9f8a7c6"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# Per operation; the whole run stays far below the 120 s pytest bound on a loaded 2-core host
# (about 15 s on an idle one with the debug build).
MAX_EXAMPLES = int(os.environ.get("RINGWIRE_OPENAPI_EXAMPLES", "60"))
# Fixed unless asked otherwise, so that a run is reproducible (schemathesis prints the seed).
SEED = os.environ.get("RINGWIRE_OPENAPI_SEED", "20261207")
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
])


def _document() -> dict:
    return json.loads(DOC_PATH.read_text())


def _operations(doc: dict) -> list[tuple[str, str]]:
    return [(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS]


def _config(**extra) -> dict:
    cfg = {
        "admin": {"token": TOKEN},
        "sessions": {"key": SESSION_KEY_A},
        "history": {"enabled": True},
    }
    cfg.update(extra)
    return cfg


def _validator(doc: dict, path: str, method: str, status: int, content_type: str = "application/json"):
    """The JSON Schema validator of one documented answer (refs resolved in the document)."""
    from openapi_schema_validator import OAS30Validator

    response = doc["paths"][path][method.lower()]["responses"].get(str(status))
    assert response is not None, f"{method} {path}: {status} is not documented"
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = dict(response["content"][content_type]["schema"])
    schema["components"] = doc["components"]
    return OAS30Validator(schema)


def _check_answer(doc: dict, path: str, method: str, r) -> None:
    """r (an AdminResponse) is a documented status, content type and body of that operation."""
    ctype = r.headers.get("content-type", "").split(";")[0].strip()
    assert ctype == "application/json", f"{method} {path} -> {r!r}: content type {ctype!r}"
    _validator(doc, path, method, r.status).validate(r.json)


def test_served_document_is_the_repository_file_and_valid_openapi(push_servers):
    from openapi_spec_validator import validate

    server = push_servers.start(**_config())
    # Open like the dashboard and the health checks: no Authorization header.
    with urllib.request.urlopen(f"http://127.0.0.1:{server.admin_port}/v1/openapi.json",
                                timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        served = r.read()
    assert served == DOC_PATH.read_bytes(), "GET /v1/openapi.json differs from docs/openapi.json"
    doc = json.loads(served)
    validate(doc)  # raises on an invalid OpenAPI 3 document
    assert doc["openapi"].startswith("3.0")
    version = subprocess.run([str(server.proc.args[0]), "--version"], capture_output=True,
                             text=True, timeout=10).stdout.split()[-1]
    assert doc["info"]["version"] == version, (doc["info"]["version"], version)
    ops = _operations(doc)
    assert len(ops) == 12, ops
    # Every operation but the open ones says it needs the token, and the server agrees.
    anon = Admin(server)
    open_paths = {"/", "/healthz", "/readyz", "/v1/openapi.json"}
    for method, path in ops:
        item = doc["paths"][path][method.lower()]
        is_open = item.get("security", doc["security"]) == []
        assert is_open == (path in open_paths), (method, path)
        r = anon.request(method, path.replace("{id}", "x"))
        if is_open:
            assert r.status == 200, (method, path, r)
        else:
            assert r.status == 401, (method, path, r)
            _check_answer(doc, path, method, r)


@pytest.mark.timeout(240)
def test_schemathesis_finds_no_disagreement(push_servers, tmp_path):
    doc = _document()
    server = push_servers.start(**_config())
    admin = Admin(server, TOKEN)
    url = f"http://127.0.0.1:{server.admin_port}"
    cmd = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "run", str(DOC_PATH), "--url", url,
        "--header", f"Authorization: Bearer {TOKEN}",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", SEED,
        "--workers", "1",
        "--request-timeout", "20",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
    ]
    env = dict(os.environ, NO_COLOR="1", COLUMNS="120", PYTHONUTF8="1", PYTHONIOENCODING="utf-8")
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"schemathesis found disagreements (exit {r.returncode}):\n{out[-12000:]}"
    # It really ran: every operation, every phase, the session link, many cases.
    assert f"Tested: {len(_operations(doc))}" in out, out[-4000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in out, f"phase {phase} did not pass:\n{out[-4000:]}"
    assert "1 covered / 1 selected" in out, out[-4000:]
    assert "No issues found" in out, out[-4000:]
    junit = next((tmp_path / "report").glob("junit*.xml")).read_text()
    cases = set(re.findall(r'<testcase name="([^"]+)"', junit))
    assert cases == {f"{m} {p}" for m, p in _operations(doc)} | {"Stateful tests"}, junit
    assert 'failures="0"' in junit and 'errors="0"' in junit, junit
    # The node came through: alive, ready, no panic, and still serving its API.
    assert server.alive(), server.stderr_text()[-4000:]
    assert Admin(server).request("GET", "/readyz").status == 200
    assert "panicked" not in server.stderr_text(), server.stderr_text()[-4000:]
    s = admin.mint(user=7)
    assert admin.revoke(s["session"]).status == 204


def test_answers_fuzzing_does_not_reach_match_the_document(push_servers):
    doc = _document()
    server = push_servers.start(**_config())
    admin = Admin(server, TOKEN)

    # A body over axum's 2 MiB limit: 413 as JSON, not axum's plain text.
    big = b'{"context":1,"user":1,"message":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    for path in ("/v1/push", "/v1/push/batch", "/v1/sessions"):
        r = admin.request("POST", path, raw=big)
        assert r.status == 413, (path, r)
        _check_answer(doc, path, "POST", r)

    # A session id that is not UTF-8 once percent-decoded is no session (404 as JSON).
    for raw_id in ("%FF%FE", "%C3", "x"):
        r = admin.request("DELETE", f"/v1/sessions/{raw_id}")
        assert r.status == 404, (raw_id, r)
        _check_answer(doc, "/v1/sessions/{id}", "DELETE", r)
        assert r.json == {"error": "no such session"}

    # A real session: minted (201), ended (204), ended again (204: not an error).
    r = admin.request("POST", "/v1/sessions", {"user": 3, "context": 1, "ttl_secs": 60})
    _check_answer(doc, "/v1/sessions", "POST", r)
    assert r.status == 201
    for _ in range(2):
        assert admin.revoke(r.json["session"]).status == 204

    # With a socket open and history on, pushes reach it and answer their positions.
    s = admin.mint(user=3)
    ws = ws_sync_connect(ws_url(server, s["session"]), s)
    try:
        wait_sockets(admin, 1, 3, 1, timeout=10)
        r = admin.request("POST", "/v1/push", {"context": 1, "user": 3, "message": ["ev", {"a": 1}]})
        assert r.status == 202 and r.json["sockets"] == 1 and "position" in r.json, r
        _check_answer(doc, "/v1/push", "POST", r)
        r = admin.request("GET", "/v1/stats")
        _check_answer(doc, "/v1/stats", "GET", r)
        assert r.json["sockets"] == 1 and r.json["endpoints"] == {"/ws": 1}, r
        r = admin.request("GET", "/v1/sockets?context=1&user=3&path=/ws")
        _check_answer(doc, "/v1/sockets", "GET", r)
        assert r.json["exists"] and r.json["nodes"][0]["count"] == 1, r
    finally:
        ws.close()
    r = admin.request("POST", "/v1/push/batch",
                      {"pushes": [{"context": 1, "user": 3, "message": "a"},
                                  {"context": 2, "user": 3, "message": 7, "path": None}]})
    assert r.status == 202 and len(r.json["positions"]) == 2, r
    _check_answer(doc, "/v1/push/batch", "POST", r)

    # Reloads: a file that needs a restart for one change (200, listed), then a broken file
    # (400, nothing changed).
    cfg = session_config(server.port, server.admin_port, **_config())
    cfg["server"]["cores"] = 1
    server.config_path.write_text(render_config(cfg))
    r = admin.request("POST", "/v1/config/reload")
    assert r.status == 200 and r.json["restart_required_for"], r
    _check_answer(doc, "/v1/config/reload", "POST", r)
    server.config_path.write_text(server.config_path.read_text() + "\nnot toml [\n")
    r = admin.request("POST", "/v1/config/reload")
    assert r.status == 400, r
    _check_answer(doc, "/v1/config/reload", "POST", r)
    assert r.json["error"].startswith("reload failed, configuration unchanged"), r


def test_the_document_catches_a_wrong_answer():
    """The validators used above are not vacuous: answers that break the document fail."""
    from jsonschema.exceptions import ValidationError

    doc = _document()
    bad = [
        ("/v1/push", "post", 202, {"sockets": 1}),  # remote_nodes missing
        ("/v1/push", "post", 202, {"sockets": -1, "remote_nodes": 0}),
        ("/v1/push", "post", 202, {"sockets": 1, "remote_nodes": 0,
                                   "position": {"epoch": "xyz", "offset": 1}}),
        ("/v1/sessions", "post", 400, {"message": "x"}),
        ("/v1/sockets", "get", 200, {"exists": True, "count": 1, "nodes": []}),
        ("/v1/stats", "get", 200, {"node": "a"}),
        ("/v1/config/reload", "post", 200, {"reloaded": False, "restart_required_for": []}),
    ]
    for path, method, status, body in bad:
        with pytest.raises(ValidationError):
            _validator(doc, path, method, status).validate(body)
    _validator(doc, "/v1/push", "post", 202).validate(
        {"sockets": 1, "remote_nodes": 0, "position": None})


def test_readme_points_at_the_document():
    readme = (ROOT / "README.md").read_text()
    assert "docs/openapi.json" in readme and "/v1/openapi.json" in readme
