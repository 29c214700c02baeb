"""The deployment files in deploy/, rendered and checked against the code they run.

No Docker engine and no cluster: ``kubectl kustomize`` renders the Kubernetes base offline,
compose.yaml and the Dockerfile are parsed, and every name they use is looked up in the code:
``GROUNDED_*`` variables in ``Settings``, probe and healthcheck paths in the FastAPI routers,
commands and options in the CLI, COPY sources in the repository. The sizes that must agree with
each other (ports, labels, worker threads vs CPU, memory vs worker_max_memory_mb) are checked too.
"""

from __future__ import annotations

import ast
import base64
import importlib
import importlib.util
import os
import pkgutil
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from fastapi import APIRouter
from fastapi.routing import APIRoute

from ingest.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs" / "deploy.md"
PREFIX = "GROUNDED_"
GROUNDED_VAR = re.compile(r"\bGROUNDED_[A-Z0-9_]+\b")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Variables the code reads that are not Settings fields; each must still be read somewhere.
NON_FIELD_VARIABLES = {"GROUNDED_CONFIG", "GROUNDED_API_KEY"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


# --- what the code offers ------------------------------------------------------------------


def setting_for(variable: str) -> str | None:
    """``GROUNDED_QDRANT_URL`` -> ``qdrant_url`` when that is a Settings field, else None."""
    if not variable.startswith(PREFIX):
        return None
    field = variable[len(PREFIX) :].lower()
    return field if field in Settings.model_fields else None


def unknown_variables(names: set[str]) -> list[str]:
    return sorted(n for n in names if n.startswith(PREFIX) and setting_for(n) is None)


@cache
def api_paths() -> frozenset[str]:
    """Every path the API serves: the routers of service/api/routes/*.py, plus /metrics."""
    from service.api import observability, routes

    paths = {observability.METRICS_PATH}
    for info in pkgutil.iter_modules(routes.__path__):
        module = importlib.import_module(f"{routes.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, APIRouter):
                served = [r for r in value.routes if isinstance(r, APIRoute)]
                assert len(served) == len(value.routes), value.routes
                paths.update(route.path for route in served)
    return frozenset(paths)


@cache
def cli() -> Any:
    """The click command tree of ``grounded`` (typer's own click: a group has ``commands``)."""
    import service.cli

    service.cli._register_plugins()  # `grounded eval ...` comes from an entry point
    return typer.main.get_command(service.cli.app)


def check_command(argv: list[str]) -> None:
    """``argv`` (``grounded sub ... --opt``) names a real command, and its options exist."""
    assert argv and argv[0] == "grounded", argv
    command = cli()
    path = ["grounded"]
    rest = argv[1:]
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        word = rest.pop(0)
        sub = command.commands.get(word)
        assert sub is not None, (
            f"`{' '.join(argv)}`: `{' '.join(path)}` has no command {word!r} "
            f"(it has: {', '.join(sorted(command.commands))})"
        )
        command, path = sub, [*path, word]
    options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    options.add("--help")
    for token in rest:
        if token.startswith("--"):
            option = token.split("=", 1)[0]
            assert option in options, (
                f"`{' '.join(argv)}`: `{' '.join(path)}` has no option {option} "
                f"(it has: {', '.join(sorted(options))})"
            )


def grounded_argv(words: list[str]) -> list[str] | None:
    """The ``grounded ...`` part of a container's command line (after tini, if any)."""
    if words[:2] == ["tini", "--"]:
        words = words[2:]
    return words if words and words[0] == "grounded" else None


def url_path(text: str) -> tuple[int | None, str] | None:
    """(port, path) of the first http URL in a command line."""
    match = re.search(r"https?://[^/:\s'\"]+(?::(\d+))?(/[^\s'\"?)]*)", text)
    if match is None:
        return None
    return (int(match[1]) if match[1] else None), match[2]


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "k": 1e3 / 2**20}
    units |= {"M": 1e6 / 2**20, "G": 1e9 / 2**20, "m": 1, "g": 1024}  # compose: m, g
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if quantity.endswith(unit):
            return float(quantity[: -len(unit)]) * factor
    return float(quantity) / 2**20


def check_sizes(where: str, env: dict[str, str], cpu_limit: float, memory_mib: float) -> None:
    """Worker processes x threads fit the CPU limit, and their memory ceiling the memory limit."""
    fields = Settings.model_fields
    concurrency = int(env.get("GROUNDED_WORKER_CONCURRENCY", fields["worker_concurrency"].default))
    threads = env.get("GROUNDED_WORKER_THREADS")
    assert threads is not None, f"{where}: set GROUNDED_WORKER_THREADS to match the CPU limit"
    assert concurrency * int(threads) <= cpu_limit, (
        f"{where}: {concurrency} processes x {threads} threads > CPU limit {cpu_limit:g}"
    )
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert int(env.get(variable, threads)) <= int(threads), f"{where}: {variable} > threads"
    max_mb = env.get("GROUNDED_WORKER_MAX_MEMORY_MB", fields["worker_max_memory_mb"].default)
    assert max_mb is not None, f"{where}: set GROUNDED_WORKER_MAX_MEMORY_MB below the limit"
    assert concurrency * int(max_mb) < memory_mib, (
        f"{where}: {concurrency} processes x {max_mb} MB >= memory limit {memory_mib:g} MiB"
    )


def check_settings(where: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The container's GROUNDED_* variables make valid Settings (e.g. visibility > time limit)."""
    with monkeypatch.context() as patch:
        for name, value in env.items():
            if name.startswith(PREFIX):
                patch.setenv(name, value)
        try:
            Settings()
        except ValueError as exc:
            pytest.fail(f"{where}: its settings do not validate: {exc}")


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        reason = (
            "kubectl is not installed: it renders deploy/k8s (`kubectl kustomize`); "
            "docs/deploy.md says how to install it"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in objects(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every workload."""
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            pod = pod_template(doc)["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield doc, container


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return values | (secret.get("stringData") or {})


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom first, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= one(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        if "secretRef" in source:
            env |= secret_values(one(docs, "Secret", source["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_values(one(docs, "Secret", ref["name"]))[ref["key"]]
        else:
            env[item["name"]] = ""
    return env


def kind_name(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def test_kustomize_renders_the_whole_stack(k8s: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in k8s}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "StatefulSet",
        "CronJob",
        "PersistentVolumeClaim",
    } <= kinds
    one(k8s, "Deployment", "grounded-api")
    one(k8s, "Deployment", "grounded-worker")
    one(k8s, "StatefulSet", "grounded-redis")
    one(k8s, "CronJob", "grounded-nightly-eval")
    namespaced = [d for d in k8s if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"grounded"}


def test_every_reference_resolves(k8s: list[dict[str, Any]]) -> None:
    """ConfigMaps, Secrets (and their keys) and claims the pods name are in the rendering
    (kustomize renames generated ConfigMaps with a hash and must have rewritten each use)."""
    for workload, container in workloads(k8s):
        for source in container.get("envFrom", []):
            for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if ref in source:
                    one(k8s, kind, source[ref]["name"])
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                keys = secret_values(one(k8s, "Secret", ref["name"]))
                assert ref["key"] in keys, (
                    f"{kind_name(workload)}: no key {ref['key']} in {ref['name']}"
                )
        pod = pod_template(workload)["spec"]
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])} | claims
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{kind_name(workload)}: no volume {mount['name']}"
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                one(k8s, "ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                one(k8s, "Secret", volume["secret"]["secretName"])
            if "persistentVolumeClaim" in volume:
                one(k8s, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_k8s_grounded_variables_are_settings_fields(
    k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    names: set[str] = set()
    for config in objects(k8s, "ConfigMap"):
        names |= set(config.get("data", {}))
    for secret in objects(k8s, "Secret"):
        names |= set(secret_values(secret))
    for _, container in workloads(k8s):
        names |= {item["name"] for item in container.get("env", [])}
    assert {"GROUNDED_QDRANT_URL", "GROUNDED_BROKER_URL", "GROUNDED_KEYS_URL"} <= names
    assert unknown_variables(names) == [], "not fields of ingest.settings.Settings"
    for workload, container in workloads(k8s):
        if grounded_argv(container.get("command", []) + container.get("args", [])):
            check_settings(kind_name(workload), container_env(k8s, container), monkeypatch)


def test_k8s_commands_are_real_cli_commands(k8s: list[dict[str, Any]]) -> None:
    commands = []
    for workload, container in workloads(k8s):
        argv = grounded_argv(container.get("command", []) + container.get("args", []))
        if workload["kind"] in {"Deployment", "CronJob"}:
            assert argv, f"{kind_name(workload)} runs no `grounded` command"
        if argv:
            check_command(argv)
            commands.append(argv[:3])
    assert ["grounded", "serve"] in commands and ["grounded", "worker"] in commands
    assert ["grounded", "eval", "nightly"] in commands


def test_api_probes_paths_and_ports(k8s: list[dict[str, Any]]) -> None:
    api = one(k8s, "Deployment", "grounded-api")
    [container] = pod_template(api)["spec"]["containers"]
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    port_numbers = set(ports.values())

    def resolve(port: str | int) -> int:
        number = ports.get(port) if isinstance(port, str) else port
        assert number is not None and number in port_numbers, (
            f"port {port!r} is not a port the container exposes"
        )
        return number

    probes = {kind: container.get(kind) for kind in ("readinessProbe", "livenessProbe")}
    assert all(probes.values()), "the API needs a readiness and a liveness probe"
    assert probes["readinessProbe"]["httpGet"]["path"] != probes["livenessProbe"]["httpGet"]["path"]
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        if kind in container:
            get = container[kind]["httpGet"]
            assert get["path"] in api_paths(), f"{kind} path {get['path']} is not an API route"
            resolve(get["port"])
    # The server listens where the probes and the Service look.
    served = int(container_env(k8s, container).get("GROUNDED_PORT", Settings().port))
    assert served in port_numbers, f"GROUNDED_PORT {served} is not a declared containerPort"
    env = container_env(k8s, container)
    assert env.get("GROUNDED_HOST") == "0.0.0.0", "the API must bind every interface of the pod"

    labels = pod_template(api)["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(k8s, "Service", "grounded-api")
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        assert resolve(port["targetPort"]) == served


def test_hpa_and_pdb_select_the_api_pods(k8s: list[dict[str, Any]]) -> None:
    api = one(k8s, "Deployment", "grounded-api")
    labels = pod_template(api)["metadata"]["labels"]
    hpa = one(k8s, "HorizontalPodAutoscaler", "grounded-api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "grounded-api")
    assert "replicas" not in api["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2
    [container] = pod_template(api)["spec"]["containers"]
    assert "cpu" in container["resources"]["requests"], "CPU utilization needs a CPU request"

    pdb = one(k8s, "PodDisruptionBudget", "grounded-api")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert pdb["spec"].get("minAvailable", 0) < hpa["spec"]["minReplicas"], "drains would block"
    for other in objects(k8s, "Deployment"):
        if other is not api:
            other_labels = pod_template(other)["metadata"]["labels"]
            assert not selector.items() <= other_labels.items(), (
                f"PDB also selects {kind_name(other)}"
            )


def test_worker_threads_and_memory_fit_its_limits(k8s: list[dict[str, Any]]) -> None:
    worker = one(k8s, "Deployment", "grounded-worker")
    [container] = pod_template(worker)["spec"]["containers"]
    limits = container["resources"]["limits"]
    check_sizes(
        kind_name(worker),
        container_env(k8s, container),
        cpu_cores(limits["cpu"]),
        mebibytes(limits["memory"]),
    )
    for _, other in workloads(k8s):  # nobody runs more torch threads than its CPU limit
        env = container_env(k8s, other)
        cpu = other.get("resources", {}).get("limits", {}).get("cpu")
        if cpu is not None and "OMP_NUM_THREADS" in env:
            assert int(env["OMP_NUM_THREADS"]) <= cpu_cores(cpu), other["name"]


def test_worker_liveness_pings_its_own_celery_node(k8s: list[dict[str, Any]]) -> None:
    worker = one(k8s, "Deployment", "grounded-worker")
    [container] = pod_template(worker)["spec"]["containers"]
    command = " ".join(container["livenessProbe"]["exec"]["command"])
    assert "inspect ping" in command and "celery@$HOSTNAME" in command
    app = re.search(r"--app[ =](\S+)", command)
    assert app is not None
    module, _, attribute = app[1].partition(":")
    celery_app = getattr(importlib.import_module(module), attribute or "app")
    assert celery_app.__class__.__name__ == "Celery"


def test_redis_is_durable_and_never_evicts(k8s: list[dict[str, Any]]) -> None:
    redis = one(k8s, "StatefulSet", "grounded-redis")
    pod = pod_template(redis)["spec"]
    [config_volume] = [v for v in pod["volumes"] if "configMap" in v]
    conf = one(k8s, "ConfigMap", config_volume["configMap"]["name"])["data"]["redis.conf"]
    directives = dict(
        line.split(None, 1) for line in conf.splitlines() if line.strip() and line[0] != "#"
    )
    assert directives["appendonly"] == "yes"
    assert directives["appendfsync"] == "everysec"
    assert directives["maxmemory-policy"] == "noeviction"
    [container] = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}
    assert mounts[directives["dir"]] in claims, "the AOF directory must be on the claimed volume"
    limit = mebibytes(container["resources"]["limits"]["memory"])
    assert mebibytes(directives["maxmemory"].replace("mb", "Mi").replace("gb", "Gi")) < limit


def test_nightly_eval_config_is_a_valid_nightly_config(k8s: list[dict[str, Any]]) -> None:
    from eval.nightly import NightlyConfig

    cronjob = one(k8s, "CronJob", "grounded-nightly-eval")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = pod_template(cronjob)["spec"]
    [container] = pod["containers"]
    argv = grounded_argv(container["args"])
    assert argv is not None
    config_path = Path(argv[argv.index("--config") + 1])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    data = one(k8s, "ConfigMap", volume["configMap"]["name"])["data"]
    config = NightlyConfig.model_validate(yaml.safe_load(data[config_path.name]))
    data_dir = argv[argv.index("--data-dir") + 1]
    for path in [config.results_dir, *(s.dataset for s in config.suites)]:
        assert path.is_absolute() and path.is_relative_to(data_dir), f"{path} not on the volume"
    env = container_env(k8s, container)
    assert "GROUNDED_QDRANT_URL" not in env, "the nightly eval must not index into production"


# --- compose --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def words(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def grounded_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: service
        for key, service in compose["services"].items()
        if "build" in service or "grounded" in str(service.get("image", ""))
    }


def test_compose_runs_qdrant_redis_api_worker_and_eval(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"qdrant", "redis", "api", "worker", "nightly-eval"} <= set(services)
    assert services["qdrant"]["image"].startswith("qdrant/qdrant")
    assert services["nightly-eval"].get("profiles"), "the eval is one-shot, not part of `up`"
    declared = set(compose.get("volumes") or {})
    for key, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{key} depends on unknown {dependency}"
            assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared, f"{key}: volume {source} is not declared"
            elif source.startswith("."):
                assert (DEPLOY / source).exists(), f"{key}: {source} does not exist"
    redis = " ".join(words(services["redis"]["command"]))
    for setting in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert setting in redis


def test_compose_grounded_variables_are_settings_fields(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    names: set[str] = set()
    for key, service in compose["services"].items():
        env = service_env(service)
        names |= set(env)
        if key in grounded_services(compose):
            check_settings(f"compose service {key}", env, monkeypatch)
    assert unknown_variables(names) == [], "not fields of ingest.settings.Settings"


def test_compose_commands_and_healthchecks_are_real(compose: dict[str, Any]) -> None:
    services = grounded_services(compose)
    assert {"api", "worker", "nightly-eval"} <= set(services)
    for key, service in services.items():
        argv = grounded_argv(words(service["command"]))
        assert argv, f"compose service {key} runs no `grounded` command"
        check_command(argv)
    api = services["api"]
    served = int(service_env(api).get("GROUNDED_PORT", Settings().port))
    published = {int(str(p).rsplit(":", 1)[-1]) for p in api.get("ports", [])}
    assert published == {served}, "compose publishes a port the API does not listen on"
    for key, service in services.items():
        test = " ".join(words(service["healthcheck"]["test"])) if "healthcheck" in service else ""
        found = url_path(test)
        if found:
            port, path = found
            assert path in api_paths(), f"compose {key} healthcheck: {path} is not an API route"
            assert port in (None, served), f"compose {key} healthcheck asks port {port}"
    assert url_path(" ".join(api["healthcheck"]["test"])) is not None


def test_compose_worker_threads_and_memory_fit_its_limits(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    limits = worker["deploy"]["resources"]["limits"]
    check_sizes(
        "compose worker",
        service_env(worker),
        cpu_cores(limits["cpus"]),
        mebibytes(limits["memory"]),
    )


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, rest = (pending + line).partition(" ")
        lines.append((instruction.upper(), rest.strip()))
        pending = ""
    return lines


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(p, pattern) or fnmatch(p, f"**/{pattern}") for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerfile_copies_sources_that_exist_and_are_not_ignored() -> None:
    copies = [rest for instruction, rest in dockerfile() if instruction == "COPY"]
    assert copies
    sources = [s for c in copies for s in words(c)[:-1] if not s.startswith("--")]
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    # pip builds the package from these: every package pyproject.toml installs is copied.
    assert {"pyproject.toml", "README.md", "ingest", "service", "eval"} <= set(sources)


def test_dockerfile_cpu_torch_by_default_and_a_cuda_build_arg() -> None:
    lines = dockerfile()
    args = dict(
        rest.split("=", 1) for instruction, rest in lines if instruction == "ARG" and "=" in rest
    )
    assert args["VARIANT"] == "cpu"
    assert args["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu1\d\d", args["TORCH_CUDA_INDEX"])
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "runtime" in args["CUDA_IMAGE"]
    froms = [rest for instruction, rest in lines if instruction == "FROM"]
    assert "${CUDA_IMAGE} AS base-cuda" in froms and froms[-1] == "base-${VARIANT}"
    runs = [rest for instruction, rest in lines if instruction == "RUN"]
    torch = [r for r in runs if "torch==" in r]
    assert torch and "--index-url" in torch[0], "torch must come from PyTorch's index"
    installs = [r for r in runs if "pip install" in r]
    assert installs.index(torch[0]) == 0, "torch first, or pip pulls the CUDA build from PyPI"
    env = " ".join(rest for instruction, rest in lines if instruction == "ENV")
    assert "HF_HUB_OFFLINE=1" in env
    assert unknown_variables(set(GROUNDED_VAR.findall(env))) == []


def test_dockerfile_python_snippets_name_what_exists() -> None:
    """The image's ``python -c`` steps (the embedding export among them) import real names: a
    rename in the code must not first fail in a container build."""
    runs = [rest for instruction, rest in dockerfile() if instruction == "RUN"]
    snippets = [m for r in runs for m in re.findall(r'python -c "([^"]+)"', r)]
    assert any("prepare_exports" in s for s in snippets), snippets
    for snippet in snippets:
        tree = ast.parse(snippet)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}: {snippet}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert importlib.util.find_spec(alias.name), f"{alias.name}: {snippet}"


def test_dockerfile_runs_as_non_root_with_a_real_default_command() -> None:
    lines = dockerfile()
    users = [rest for instruction, rest in lines if instruction == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    cmd = [rest for instruction, rest in lines if instruction == "CMD"][-1]
    entrypoint = [rest for instruction, rest in lines if instruction == "ENTRYPOINT"]
    argv = grounded_argv(yaml.safe_load(entrypoint[-1]) + yaml.safe_load(cmd))
    assert argv is not None, "the default command is not `grounded ...`"
    check_command(argv)
    exposed = {int(rest.split("/")[0]) for instruction, rest in lines if instruction == "EXPOSE"}
    env = " ".join(rest for instruction, rest in lines if instruction == "ENV")
    port = re.search(r"GROUNDED_PORT=(\d+)", env)
    assert exposed == {int(port[1]) if port else Settings().port}


# --- words in the docs ----------------------------------------------------------------------


def deploy_texts() -> dict[str, str]:
    files = [p for p in DEPLOY.rglob("*") if p.is_file()] + [DOCS, REPO / ".dockerignore"]
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in files}


def test_grounded_variables_named_anywhere_are_real() -> None:
    """Every GROUNDED_* word in deploy/ and docs/deploy.md is a setting or one the code reads."""
    source = "\n".join(
        p.read_text(encoding="utf-8")
        for package in ("ingest", "service", "eval")
        for p in (REPO / package).rglob("*.py")
    )
    for variable in NON_FIELD_VARIABLES:
        assert f'"{variable}"' in source, f"{variable} is no longer read by the code"
    for path, text in deploy_texts().items():
        names = set(GROUNDED_VAR.findall(text)) - NON_FIELD_VARIABLES
        assert unknown_variables(names) == [], f"{path}: not fields of Settings"


def test_commands_in_the_deploy_docs_are_real(compose: dict[str, Any]) -> None:
    """`grounded ...` in the shell blocks of docs/deploy.md names real commands and options: at
    the start of a line, after `VAR=value`, `--` (kubectl exec) or a compose service (compose
    run)."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S)
    before = {"--", *compose["services"]}
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            starts = [
                i
                for i, t in enumerate(tokens)
                if t == "grounded"
                and (i == 0 or tokens[i - 1] in before or ENV_ASSIGNMENT.match(tokens[i - 1]))
            ]
            for start in starts:
                argv = tokens[start:]
                ends = [i for i, t in enumerate(argv) if t in {"|", "&&", "||", ";"}]
                argv = argv[: ends[0]] if ends else argv
                check_command(argv)
                commands.append(" ".join(argv[:2]))
    assert {"grounded keys", "grounded migrate"} <= set(commands)


def test_qdrant_values_match_the_k8s_base(k8s: list[dict[str, Any]]) -> None:
    """The Helm values read the API key the pods use, and the cluster can hold the collection
    layout grounded asks for."""
    values = yaml.safe_load((DEPLOY / "helm" / "qdrant-values.yaml").read_text(encoding="utf-8"))
    assert values["config"]["cluster"]["enabled"] is True
    nodes = values["replicaCount"]
    assert nodes >= 3
    assert values["persistence"]["size"] and values["podDisruptionBudget"]["enabled"]
    assert values["affinity"]["podAntiAffinity"]
    ref = values["apiKey"]["valueFrom"]["secretKeyRef"]
    secret = secret_values(one(k8s, "Secret", ref["name"]))  # exact name: no hash suffix
    assert ref["key"] == "GROUNDED_QDRANT_API_KEY" and ref["key"] in secret
    api = one(k8s, "Deployment", "grounded-api")
    env = container_env(k8s, pod_template(api)["spec"]["containers"][0])
    assert env["GROUNDED_QDRANT_URL"].startswith("http://qdrant:6333")  # release "qdrant"
    replication = int(env["GROUNDED_QDRANT_REPLICATION_FACTOR"])
    assert 2 <= replication <= nodes, "a copy per node at most, and one to lose"
    assert int(env["GROUNDED_QDRANT_WRITE_CONSISTENCY_FACTOR"]) <= replication
    assert int(env["GROUNDED_QDRANT_SHARD_NUMBER"]) % nodes == 0, "shards spread evenly"
