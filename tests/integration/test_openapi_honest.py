"""The OpenAPI document says what the server does (what schemathesis's conformance checks found,
each pinned here without running schemathesis): a 405 names every method served at the path,
unknown runs / unreadable bodies / state conflicts are documented, /events bodies are typed, JSON
integers are integers (3.0 yes, false and "3" no) within what JSON readers hold exactly, and
typed query parameters refuse what the schema refuses — on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def client(request: pytest.FixtureRequest, make_client: Any) -> Any:
    return make_client(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def test_405_names_every_method_of_the_path(client: Any) -> None:
    run = client.post("/api/runs/external", json={"name": "allow"}).json()
    for method, path, allowed in (("OPTIONS", "/api/runs", {"GET", "POST"}),
                                  ("OPTIONS", f"/api/runs/{run['id']}", {"GET", "DELETE"}),
                                  ("OPTIONS", "/api/runs/compare", {"GET"}),  # not a run id
                                  ("OPTIONS", "/api/runs/external", {"POST"}),
                                  ("PUT", f"/api/runs/{run['id']}/events", {"GET", "POST"}),
                                  ("GET", f"/api/runs/{run['id']}/cancel", {"POST"})):
        r = client.request(method, path)
        assert r.status_code == 405, (method, path, r.status_code)
        assert {m.strip() for m in r.headers["allow"].split(",")} - {"HEAD"} == allowed, (method, path)


def test_refusals_are_documented() -> None:
    from backend.core.config import Settings
    from backend.main import create_app

    schema = create_app(Settings(database_url="sqlite:///:memory:", migrate=False)).openapi()
    paths = schema["paths"]
    for path, ops in paths.items():
        for method, op in ops.items():
            if "{run_id}" in path or path == "/api/runs/compare":
                assert "404" in op["responses"], (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= set(op["responses"]), (method, path)
            if path.startswith("/api/2.0/mlflow/"):  # MLflow's own error body: {error_code, message}
                for code in ("400", "404"):
                    assert "error_code" in str(op["responses"][code]["content"]), (method, path, code)
    for method, path in (("delete", "/api/runs/{run_id}"), ("post", "/api/runs/{run_id}/cancel"),
                         ("post", "/api/runs/{run_id}/rerun")):
        assert "409" in paths[path][method]["responses"], (method, path)
    events = schema["components"]["schemas"]["EventsIngest"]["properties"]["events"]["items"]
    assert {b["$ref"].rsplit("/", 1)[1] for b in events["oneOf"]} >= {"MetricsEventInput", "RunStartedInput"}
    assert schema["components"]["schemas"]["MetricsEventInput"]["required"][0] == "type"
    text = str(schema)
    assert "'ge':" not in text and "'le':" not in text, "bounds must be JSON Schema minimum/maximum"
    media = paths["/api/runs/{run_id}/artifacts/{name}"]["get"]["responses"]["200"]["content"]
    assert "application/octet-stream" in media


def test_json_integers(client: Any) -> None:
    r = client.post("/api/runs/external", json={"name": "ints", "total_steps": False})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "total_steps"]
    assert client.post("/api/runs/external", json={"name": "ints", "total_steps": "3"}).status_code == 422
    assert client.post("/api/runs/external", json={"name": "ints", "seed": 2**53}).status_code == 422
    run = client.post("/api/runs/external", json={"name": "ints", "total_steps": 5.0, "seed": 2**53 - 1}).json()
    assert (run["total_steps"], run["seed"]) == (5, 2**53 - 1)
    r = client.post(f"/api/runs/{run['id']}/events", json={"events": [
        {"type": "metrics", "seq": 0.0, "step": 1.0, "values": {"loss": 1.0, "kl": None}}]})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    r = client.post(f"/api/runs/{run['id']}/events", json={"events": [{"seq": 1, "values": {}}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "events", 0]


def test_typed_query_parameters(client: Any) -> None:
    run = client.post("/api/runs/external", json={"name": "q"}).json()
    assert client.get("/api/runs", params={"status": "queued,running"}).status_code == 200
    for path, params, field in (("/api/runs", {"status": "bogus"}, "status"),
                                ("/api/runs", {"cursor": "abc"}, "cursor"),
                                (f"/api/runs/{run['id']}/events", {"types": "10000000.0"}, "types"),
                                (f"/api/runs/{run['id']}/metrics", {"keys": "a\u0000b"}, "keys"),
                                ("/api/runs/compare", {"ids": "\f"}, "ids"),
                                ("/api/runs/compare", {"ids": ",".join(["a"] * 21)}, "ids")):
        r = client.get(path, params=params)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["query", field], (path, params, r.text)
    page = client.get("/api/runs", params={"limit": 1}).json()
    assert page["next_cursor"] is None or isinstance(page["next_cursor"], int)


def _array_depth(node: dict[str, Any]) -> int:
    """How deep the JsonValue schema describes arrays in arrays; every level must say what its
    items are (no bare ``{"type": "array"}`` that would let NUL strings through the schema)."""
    arrays = [b for b in node["anyOf"] if b.get("type") == "array"]
    assert all("items" in a for a in arrays), node
    assert {"type": "string", "pattern": "^[^\\x00]*$"} in node["anyOf"], node
    return max((1 + _array_depth(a["items"]) for a in arrays), default=0)


def test_arrays_in_arrays_agree_with_the_schema(client: Any) -> None:
    from rlhfkit.events import JSON_MAX_ARRAY_NESTING

    schema = client.get("/openapi.json").json()
    assert _array_depth(schema["components"]["schemas"]["JsonValue"]) == JSON_MAX_ARRAY_NESTING == 4
    deepest: Any = "x"
    for _ in range(JSON_MAX_ARRAY_NESTING):
        deepest = [deepest]
    r = client.post("/api/runs/external", json={"name": "arrays", "config": {"m": deepest, "o": [{"k": deepest}]}})
    assert r.status_code == 201, r.text
    assert client.get(f"/api/runs/{r.json()['id']}").json()["config"]["m"] == deepest
    for config in ({"m": [deepest]}, {"m": [[["a\u0000"]]]}):
        r = client.post("/api/runs/external", json={"name": "arrays", "config": config})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "config"], r.text


def test_memory_estimator_is_warmed_at_start_up(make_client: Any, sqlite_url: str) -> None:
    """The first estimate must not wait for torch + transformers: start-up loads them in the
    background (``warm_estimator``), which sizes the default config once."""
    import time

    from backend.services import suggestions

    suggestions._estimate.cache_clear()
    make_client(sqlite_url, warm_estimator=False)
    time.sleep(0.5)
    assert suggestions._estimate.cache_info().currsize == 0
    make_client(sqlite_url)
    deadline = time.monotonic() + 120  # a loaded machine; the point is that nobody asked for it
    while suggestions._estimate.cache_info().currsize < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert suggestions._estimate.cache_info().currsize == 2


def test_mlflow_integers(client: Any) -> None:
    """MLflow's int64 fields take numbers or numeric strings, never true/false, and stay within
    what a JSON reader holds exactly (the schema's maximum is then exact); a string is accepted
    exactly when it matches the pattern the document gives it (every match in range)."""
    search = "/api/2.0/mlflow/experiments/search"
    assert client.post(search, json={"max_results": "5"}).status_code == 200
    for bad in (True, "10000", "0", "5.0"):
        r = client.post(search, json={"max_results": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "max_results"], (bad, r.text)
    log_metric = "/api/2.0/mlflow/runs/log-metric"
    r = client.post(log_metric, json={"run_id": "x", "key": "k", "value": 1.0, "timestamp": 0, "step": 2**53})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "step"], r.text
    for field, bad in (("timestamp", "1" * 16), ("step", "1" * 16), ("timestamp", "-1"), ("step", False)):
        r = client.post(log_metric, json={"run_id": "x", "key": "k", "value": 1.0, field: bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], (field, bad, r.text)
    # valid: past validation to the run lookup (an unknown run is MLflow's 404)
    r = client.post(log_metric, json={"run_id": "x", "key": "k", "value": 1.0, "timestamp": "1" * 15, "step": "-12"})
    assert r.status_code == 404, r.text


def test_mlflow_metric_values(client: Any) -> None:
    """A metric value is a number, or "NaN" / "Infinity" / "-Infinity" as protobuf's JSON writes
    them; true/false and other strings are refused naming the field (they were read as 1/0 and
    parsed)."""
    log_metric = "/api/2.0/mlflow/runs/log-metric"
    for bad in (True, "1.5", "nan", ""):
        r = client.post(log_metric, json={"run_id": "x", "key": "k", "value": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "value"], (bad, r.text)
    for good in (2, -0.5, "NaN", "Infinity", "-Infinity"):
        assert client.post(log_metric, json={"run_id": "x", "key": "k", "value": good}).status_code == 404, good
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    value = schema["MetricBody"]["properties"]["value"]
    assert {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]} in value["anyOf"]


def test_mlflow_strings_refuse_nul(client: Any) -> None:
    """No string of the MLflow door holds NUL (PostgreSQL's text cannot: these were 500s there), and
    the document says so: a 422 naming the field, before any lookup."""
    m = "/api/2.0/mlflow"
    run = client.post(f"{m}/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
    for path, body, loc in ((f"{m}/experiments/create", {"name": "a\u0000"}, ["body", "name"]),
                            (f"{m}/experiments/create", {"name": "a", "artifact_location": "\u0000"},
                             ["body", "artifact_location"]),
                            (f"{m}/experiments/create", {"name": "a", "tags": [{"key": "k", "value": "\u0000"}]},
                             ["body", "tags", 0, "value"]),
                            (f"{m}/runs/create", {"experiment_id": "0", "user_id": "\u0000"}, ["body", "user_id"]),
                            (f"{m}/runs/update", {"run_id": run, "run_name": "x\u0000"}, ["body", "run_name"]),
                            (f"{m}/runs/update", {"run_id": "a\u0000"}, ["body", "run_id"])):
        r = client.post(path, json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (path, body, r.text)
    for path, params in ((f"{m}/experiments/get-by-name", {"experiment_name": "a\u0000"}),
                         (f"{m}/runs/get", {"run_id": "a\u0000"})):
        r = client.get(path, params=params)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", next(iter(params))], r.text
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["KeyValue"]["properties"]["value"]["pattern"] == "^[^\\x00]*$"


def test_links_lead_where_a_new_run_exists(client: Any) -> None:
    """The document's links (what schemathesis's stateful phase follows) send a run's id only where
    any run answers: every linked GET finds a just-registered run; /profile and /origin, which
    exist only for a profiled / suggested run (404 otherwise), are not linked."""
    schema = client.get("/openapi.json").json()
    run = client.post("/api/runs/external", json={"name": "links"}).json()
    links = schema["paths"]["/api/runs/external"]["post"]["responses"]["201"]["links"]
    targets = set()
    for link in links.values():
        assert link["parameters"] == {"path.run_id": "$response.body#/id"}, link
        path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
        path = path.replace("~1", "/").replace("~0", "~")
        assert method in schema["paths"][path], link  # no dangling link
        targets.add(f"{method} {path}")
        if method == "get":
            r = client.get(path.replace("{run_id}", run["id"]))
            assert r.status_code != 404 and r.status_code < 500, (path, r.status_code, r.text)
    assert "get /api/runs/{run_id}/events" in targets and "delete /api/runs/{run_id}" in targets
    for path in ("/api/runs/{run_id}/profile", "/api/runs/{run_id}/origin"):
        assert f"get {path}" not in targets
        assert client.get(path.replace("{run_id}", run["id"])).status_code == 404
    # an external run cannot be re-run here (409): only a native run's id is linked to /rerun
    assert "post /api/runs/{run_id}/rerun" not in targets
    native = schema["paths"]["/api/runs"]["post"]["responses"]["201"]["links"]
    assert "#/paths/~1api~1runs~1{run_id}~1rerun/post" in {v["operationRef"] for v in native.values()}
    mlflow_run = schema["paths"]["/api/2.0/mlflow/runs/create"]["post"]["responses"]["200"]["links"]
    run_id = "$response.body#/run/info/run_id"  # an MLflow run's id goes to MLflow operations, in their field
    assert all(v.get("parameters", v.get("requestBody")) in ({"query.run_id": run_id}, {"run_id": run_id})
               for v in mlflow_run.values())
    assert {v["operationRef"].rsplit("~1", 1)[1] for v in mlflow_run.values()} >= {"get/get", "log-metric/post"}
    created = client.post("/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
    assert client.get("/api/2.0/mlflow/runs/get", params={"run_id": created}).status_code == 200
    r = client.post("/api/2.0/mlflow/runs/log-metric", json={"run_id": created, "key": "k", "value": 1.0})
    assert r.status_code == 200, r.text
    exp = client.post("/api/2.0/mlflow/experiments/create", json={"name": "links"}).json()
    assert client.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": exp["experiment_id"]}).status_code == 200
