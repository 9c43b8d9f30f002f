"""deploy/: every YAML parses, and the fields the guide relies on hold (no cluster, no network).

KubeRay manifests are checked against the fields KubeRay reads (ray.io/v1 RayCluster/RayJob),
the NetworkPolicies against the Ray ports they must fence, the cluster-launcher YAML against
Ray's own schema and defaults, and the Dockerfile as a list of instructions. Files that must
exist (the pipeline a RayJob runs, the manifests themselves) fail the test when missing; nothing
here skips.
"""
from __future__ import annotations

import fnmatch
import json
import re
import shlex
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
GCS_PORT, DASHBOARD_PORT = 6379, 8265
GPU = "nvidia.com/gpu"
MIN_RAY_FOR_TOKEN_AUTH = (2, 52)
OPERATOR_LABEL = {"app.kubernetes.io/name": "kuberay-operator"}


# -- loading ------------------------------------------------------------------------------------

def _docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for i, d in enumerate(docs):
        assert isinstance(d, dict), f"{path.relative_to(ROOT)} document {i} is not a mapping"
    return docs


@pytest.fixture(scope="module")
def manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(KUBERAY.glob("*.y*ml")):
        out += [(path, d) for d in _docs(path)]
    return out


def _of_kind(manifests, kind: str) -> list[dict[str, Any]]:
    return [d for _, d in manifests if d.get("kind") == kind]


def _ray_cluster_specs(manifests) -> list[tuple[str, dict[str, Any], bool]]:
    """(where, RayClusterSpec, dashboard must be loopback) for every cluster deploy/ defines."""
    specs = [(f"RayCluster {d['metadata']['name']}", d["spec"], True) for d in _of_kind(manifests, "RayCluster")]
    # A RayJob's cluster may serve its dashboard on the pod address: the operator polls job status
    # through the head Service. test_networkpolicy_fences_every_ray_cluster then requires the fence.
    specs += [(f"RayJob {d['metadata']['name']}", d["spec"]["rayClusterSpec"], False)
              for d in _of_kind(manifests, "RayJob")]
    return specs


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):  # comment lines inside a continued instruction
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def _dockerfile_args() -> dict[str, str]:
    args = {}
    for ins, rest in _dockerfile():
        if ins == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip().strip('"')
    return args


def _expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def _image_paths() -> dict[str, str]:
    """Repository path (as in the build context) -> absolute path in the image, from COPY."""
    workdir, out = "/", {}
    for ins, rest in _dockerfile():
        if ins == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
        elif ins == "COPY" and not rest.startswith("--from"):
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            *srcs, dst = parts
            dst_abs = dst if dst.startswith("/") else f"{workdir.rstrip('/')}/{dst}"
            for src in srcs:
                name = src.rstrip("/")
                into_dir = dst.endswith("/") and not src.endswith("/")
                dest = dst_abs.rstrip("/") + ("/" + Path(name).name if into_dir else "")
                out[name] = dest
    return out


def _quantity(q: Any) -> Decimal:
    """A Kubernetes resource quantity ("500m", "16Gi", "4", 2) as a number."""
    s = str(q).strip()
    m = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?", s)
    assert m, f"not a Kubernetes quantity: {q!r}"
    factors = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
               "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
               "Pi": 2**50, "Ei": 2**60}
    return Decimal(m.group(1)) * Decimal(factors[m.group(2)])


def _pipeline_refs(text: str) -> list[str]:
    return re.findall(r"(?<![\w.-])(?:/[\w./-]*/)?(pipelines/[\w./-]+\.ya?ml)", text)


def _ray_version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:3])


# -- the set of files ---------------------------------------------------------------------------

def test_deploy_has_the_documented_files():
    for name in ["Dockerfile", "Dockerfile.dockerignore", "README.md", "cluster.yaml",
                 "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/networkpolicy.yaml",
                 "kuberay/serviceaccount.yaml"]:
        assert (DEPLOY / name).is_file(), f"deploy/{name} is missing"


def test_every_yaml_under_deploy_parses():
    paths = sorted(DEPLOY.rglob("*.y*ml"))
    assert len(paths) >= 5
    for path in paths:
        docs = _docs(path)
        assert docs, f"{path.relative_to(ROOT)} holds no document"
        if path.parent == KUBERAY:
            for d in docs:
                assert d.get("apiVersion") and d.get("kind"), f"{path.name}: a document without apiVersion/kind"
                assert d.get("metadata", {}).get("name"), f"{path.name}: a {d['kind']} without a name"


def test_kinds_and_api_versions(manifests):
    kinds = {(d["apiVersion"], d["kind"]) for _, d in manifests}
    assert ("ray.io/v1", "RayCluster") in kinds
    assert ("ray.io/v1", "RayJob") in kinds
    assert ("networking.k8s.io/v1", "NetworkPolicy") in kinds
    assert ("v1", "ServiceAccount") in kinds
    names = [(d["kind"], d["metadata"]["name"]) for _, d in manifests]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"


# -- RayCluster and the RayJob's embedded cluster -------------------------------------------------

def _groups(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]


def _ray_container(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]  # KubeRay: the Ray container is the first


def test_cluster_specs_versions_auth_autoscaling(manifests):
    ray_version = _dockerfile_args()["RAY_VERSION"]
    specs = _ray_cluster_specs(manifests)
    assert len(specs) >= 2
    for where, spec, _ in specs:
        assert spec.get("rayVersion") == ray_version, f"{where}: rayVersion != Dockerfile RAY_VERSION {ray_version}"
        assert _ray_version(spec["rayVersion"]) >= MIN_RAY_FOR_TOKEN_AUTH
        assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token auth is off"
        assert spec.get("enableInTreeAutoscaling") is True, f"{where}: autoscaling is off"
        opts = spec.get("autoscalerOptions", {})
        assert opts.get("idleTimeoutSeconds", 0) > 0
        assert opts.get("upscalingMode") in {"Conservative", "Default", "Aggressive"}
        res = opts.get("resources", {})
        for k, lim in res.get("limits", {}).items():
            assert _quantity(res["requests"][k]) <= _quantity(lim)


def test_head_group(manifests):
    for where, spec, loopback in _ray_cluster_specs(manifests):
        head = spec["headGroupSpec"]
        params = head["rayStartParams"]
        assert "dashboard-host" in params, f"{where}: dashboard-host unset (KubeRay then binds 0.0.0.0)"
        if loopback:
            assert params["dashboard-host"] in LOOPBACK, f"{where}: dashboard bound to {params['dashboard-host']}"
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: head Service exposed"
        assert not head.get("enableIngress", False), f"{where}: Ingress for the dashboard"
        c = _ray_container(head)
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        assert ports.get("gcs-server") == GCS_PORT and ports.get("dashboard") == DASHBOARD_PORT
        assert GPU not in c["resources"].get("limits", {}), f"{where}: a GPU on the head"


def test_every_group_is_sized_and_consistent(manifests):
    service_accounts = {d["metadata"]["name"] for d in _of_kind(manifests, "ServiceAccount")}
    for where, spec, _ in _ray_cluster_specs(manifests):
        repos, instances = set(), set()
        for name, g in _groups(spec):
            at = f"{where} group {name}"
            params = g["rayStartParams"]
            for k, v in params.items():  # KubeRay's rayStartParams is map[string]string
                assert isinstance(v, str), f"{at}: rayStartParams.{k} must be a string, got {v!r}"
            store = int(params.get("object-store-memory", "0"))
            assert store > 0, f"{at}: object-store-memory unset"
            pod = g["template"]["spec"]
            c = _ray_container(g)
            assert c.get("image"), f"{at}: no image"
            assert "command" not in c and "args" not in c, f"{at}: overrides KubeRay's `ray start` command"
            repos.add(c["image"].rsplit(":", 1)[0])
            res = c["resources"]
            for k in ("cpu", "memory"):
                assert k in res["requests"] and k in res["limits"], f"{at}: {k} request/limit missing"
            for k, lim in res["limits"].items():
                assert _quantity(res["requests"].get(k, lim)) <= _quantity(lim), f"{at}: {k} request > limit"
            mem = _quantity(res["limits"]["memory"])
            assert store <= mem / 2, f"{at}: object store {store} leaves too little of {mem} bytes"
            shm = [v for v in pod.get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"]
            mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
            assert shm and mounts.get(shm[0]["name"]) == "/dev/shm", f"{at}: no memory-backed /dev/shm"
            assert _quantity(shm[0]["emptyDir"]["sizeLimit"]) >= store, f"{at}: /dev/shm smaller than the store"
            sc = pod.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, f"{at}: runs as root"
            assert c.get("securityContext", {}).get("allowPrivilegeEscalation") is False
            assert pod.get("serviceAccountName") in service_accounts, f"{at}: unknown serviceAccountName"
            instances.add(g["template"].get("metadata", {}).get("labels", {}).get("app.kubernetes.io/instance"))
        assert len(repos) == 1, f"{where}: groups run different images {repos}"
        assert len(instances) == 1 and None not in instances, f"{where}: groups disagree on the instance label"


def test_worker_groups_cpu_and_gpu(manifests):
    for where, spec, _ in _ray_cluster_specs(manifests):
        workers = spec.get("workerGroupSpecs", [])
        names = [g["groupName"] for g in workers]
        assert len(names) == len(set(names)), f"{where}: duplicate group names"
        gpu_groups, cpu_groups = [], []
        for g in workers:
            lo, n, hi = g["minReplicas"], g.get("replicas", g["minReplicas"]), g["maxReplicas"]
            assert 0 <= lo <= n <= hi and hi >= 1, f"{where} group {g['groupName']}: min {lo} replicas {n} max {hi}"
            c = _ray_container(g)
            gpus = int(_quantity(c["resources"].get("limits", {}).get(GPU, 0)))
            (gpu_groups if gpus else cpu_groups).append(g)
            if gpus:
                # extended resources: request must equal limit
                assert _quantity(c["resources"]["requests"].get(GPU, gpus)) == gpus
                pod = g["template"]["spec"]
                assert pod.get("nodeSelector") or pod.get("affinity"), f"{where}: GPU group lands anywhere"
                assert any(t.get("key") == GPU for t in pod.get("tolerations", [])), f"{where}: no GPU toleration"
                assert c["image"].endswith("cuda"), f"{where}: GPU group runs {c['image']} (not the CUDA build)"
            else:
                assert not c["image"].endswith("cuda"), f"{where}: CPU group pulls the CUDA build"
        assert gpu_groups, f"{where}: no GPU worker group (nvidia.com/gpu limit)"
        assert cpu_groups, f"{where}: no CPU worker group"


# -- RayJob ---------------------------------------------------------------------------------------

def test_rayjob_runs_an_existing_pipeline_from_the_image(manifests):
    image_paths = _image_paths()
    assert "pipelines" in image_paths, "the Dockerfile does not copy pipelines/ into the image"
    jobs = _of_kind(manifests, "RayJob")
    assert jobs
    for job in jobs:
        spec = job["spec"]
        entry = spec["entrypoint"]
        argv = shlex.split(entry)
        assert argv[:2] == ["curate", "run"], f"entrypoint is not `curate run ...`: {entry}"
        refs = _pipeline_refs(argv[2])
        assert refs, f"entrypoint runs no file under pipelines/: {entry}"
        # must exist in the repository (a missing file fails, it does not skip)
        assert (ROOT / refs[0]).is_file(), f"{refs[0]} (run by RayJob {job['metadata']['name']}) does not exist"
        # an absolute path inside the image: a job's working directory is not the image's WORKDIR
        in_image = image_paths["pipelines"] + refs[0][len("pipelines"):]
        assert argv[2] == in_image, f"{argv[2]} is not where the image has {refs[0]} ({in_image})"
        assert spec.get("submissionMode") in {"K8sJobMode", "HTTPMode", "SidecarMode"}
        assert spec.get("shutdownAfterJobFinishes") is True
        assert spec.get("ttlSecondsAfterFinished", 0) > 0
        assert "clusterSelector" not in spec, "the RayJob must bring its own rayClusterSpec"


def test_rayjob_overrides_validate_against_the_pipeline(manifests):
    from curation.runner.spec import load_pipeline
    from curation.score.stage import ScoreConfig

    for job in _of_kind(manifests, "RayJob"):
        argv = shlex.split(job["spec"]["entrypoint"])
        ref = _pipeline_refs(argv[2])[0]
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        assert len(sets) == sum(a == "--set" for a in argv)
        p = load_pipeline(str(ROOT / ref), sets)  # raises ConfigError naming the bad key
        assert "://" in p.input and "://" in p.output, "a cluster run needs shared storage for input/output"
        # every stages.N override must target the stage the comment says (score's device/actors)
        for s in sets:
            m = re.match(r"stages\.(\d+)\.config\.(device|actors)=(.*)", s)
            if m:
                assert p.stages[int(m.group(1))].stage == "score", f"--set {s} does not target the score stage"
        score = [st.config for st in p.stages if st.stage == "score"]
        cfg = score[0] if score else None
        assert cfg is None or isinstance(cfg, ScoreConfig)
        if cfg is not None and cfg.device == "cuda":
            gpus = sum(g["maxReplicas"] * int(_quantity(_ray_container(g)["resources"]["limits"].get(GPU, 0)))
                       for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"])
            assert (cfg.actors or 1) <= gpus, "more GPU actors than the GPU groups can ever hold"


# -- NetworkPolicy --------------------------------------------------------------------------------

def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert not selector.get("matchExpressions"), "matchExpressions: extend this test"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _rule_ports(rule: dict[str, Any]) -> set[int] | None:
    """None: every port."""
    if not rule.get("ports"):
        return None
    return {int(p["port"]) for p in rule["ports"]}


def test_networkpolicy_fences_every_ray_cluster(manifests):
    policies = _of_kind(manifests, "NetworkPolicy")
    for d in policies:
        for rule in d["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                assert "ipBlock" not in peer, f"{d['metadata']['name']}: ipBlock ingress"
    for where, spec, loopback in _ray_cluster_specs(manifests):
        labels = [g["template"]["metadata"]["labels"] for _, g in _groups(spec)]
        for pod_labels in labels:
            mine = [p for p in policies if _selects(p["spec"]["podSelector"], pod_labels)
                    and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
            assert mine, f"{where}: no NetworkPolicy selects pods labelled {pod_labels}"
            for pol in mine:
                for rule in pol["spec"].get("ingress", []):
                    ports = _rule_ports(rule)
                    peers = rule.get("from")
                    assert peers, f"{pol['metadata']['name']}: an ingress rule open to every source"
                    for peer in peers:
                        same_cluster = ("namespaceSelector" not in peer and "podSelector" in peer
                                        and _selects(peer["podSelector"], pod_labels)
                                        and peer["podSelector"].get("matchLabels")
                                        == pol["spec"]["podSelector"].get("matchLabels"))
                        if same_cluster:
                            continue
                        # anything else may reach the dashboard port only, and only the operator
                        assert ports == {DASHBOARD_PORT}, \
                            f"{pol['metadata']['name']}: {peer} may reach {ports or 'every port'} " \
                            f"(GCS {GCS_PORT} included)"
                        assert peer.get("podSelector", {}).get("matchLabels") == OPERATOR_LABEL and \
                            peer.get("namespaceSelector", {}).get("matchLabels"), \
                            f"{pol['metadata']['name']}: 8265 open to {peer}, not to the KubeRay operator"
                        assert not loopback, f"{where}: its dashboard is on loopback; no outside peer needed"


# -- the cluster launcher -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    (doc,) = _docs(DEPLOY / "cluster.yaml")
    return doc


def test_cluster_yaml_passes_rays_own_validation(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(json.loads(json.dumps(launcher)))  # fills Ray's AWS defaults
    validate_config(prepared)  # Ray's ray-schema.json
    # left unset, Ray's defaults would pip-install a Ray nightly into the image on every node
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert key in launcher, f"cluster.yaml: {key} unset (Ray's default would run)"
    assert prepared["setup_commands"] == []


def test_cluster_yaml_fields(launcher, manifests):
    assert launcher["provider"]["type"] == "aws" and launcher["provider"].get("region")
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    for name, t in types.items():
        assert t.get("min_workers", 0) <= t.get("max_workers", 0) <= launcher["max_workers"], name
    assert launcher["idle_timeout_minutes"] > 0
    image = launcher["docker"]["image"]
    assert image
    k8s_repos = {_ray_container(g)["image"].rsplit(":", 1)[0]
                 for _, spec, _ in _ray_cluster_specs(manifests) for _, g in _groups(spec)}
    assert {image.rsplit(":", 1)[0]} == k8s_repos, "launcher and KubeRay run different images"
    gpu = [t for t in types.values() if re.match(r"(g4dn|g5|g6e?|p3|p4d|p4de|p5)\.", t["node_config"]["InstanceType"])]
    assert gpu, "no GPU node type"
    for t in gpu:
        assert t["min_workers"] <= t["max_workers"] and t["max_workers"] >= 1
        assert t.get("docker", {}).get("worker_image", "").endswith("cuda"), "GPU nodes need the CUDA build"
    head = " ".join(launcher["head_start_ray_commands"])
    workers = " ".join(launcher["worker_start_ray_commands"])
    m = re.search(r"--dashboard-host[= ](\S+)", head)
    assert m and m.group(1) in LOOPBACK, "the head's dashboard is not bound to loopback"
    assert "--object-store-memory" in head and "--object-store-memory" in workers
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers


def test_no_wildcard_dashboard_outside_the_fenced_rayjob():
    for path in [DEPLOY / "cluster.yaml", KUBERAY / "raycluster.yaml", DOCKERFILE]:
        assert "0.0.0.0" not in path.read_text(), f"{path.relative_to(ROOT)} mentions 0.0.0.0"


# -- Dockerfile -----------------------------------------------------------------------------------

def test_dockerfile_parses_and_pins_torch():
    ins = _dockerfile()
    assert ins, "empty Dockerfile"
    kinds = [k for k, _ in ins]
    assert set(kinds) <= {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT",
                          "CMD", "LABEL", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "VOLUME", "ADD", "ONBUILD"}, kinds
    assert all(k == "ARG" for k in kinds[: kinds.index("FROM")]), "only ARG may precede FROM"
    args = _dockerfile_args()
    base = _expand(dict(ins)["FROM"], args)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    # the same torch pins as the Makefile
    make = (ROOT / "Makefile").read_text()
    pins = dict(re.findall(r"\b(torch|torchvision)==([\w.]+)", make))
    runs = [_expand(r, args) for k, r in ins if k == "RUN"]
    torch_run = [r for r in runs if "torch==" in r]
    assert torch_run, "torch is not installed pinned"
    for pkg, ver in pins.items():
        assert f"{pkg}=={ver}" in torch_run[0], f"{pkg} not pinned to the Makefile's {ver}"
    assert "--index-url" in torch_run[0] and "TORCH_INDEX_URL" in args, "no CPU-wheel index build arg"
    # the project itself, from the copied pyproject
    paths = _image_paths()
    src = str(Path(paths["pyproject.toml"]).parent)
    pip_install = rf"pip install (\S+ )*({re.escape(src)}|\.)(\s|$)"
    assert any(re.search(pip_install, r) for r in runs), "the project is not pip-installed"
    assert any("curate" in r for r in runs), "the build does not check that `curate` is on PATH"


def test_dockerfile_user_ports_and_context():
    ins = _dockerfile()
    users = [r for k, r in ins if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image runs as root"
    exposed = {int(p.split("/")[0]) for k, r in ins if k == "EXPOSE" for p in r.split()}
    assert {GCS_PORT, DASHBOARD_PORT, 10001} <= exposed
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]

    def ignored(path: str) -> bool:
        out = False
        for pat in patterns:
            neg = pat.startswith("!")
            p = pat[1:] if neg else pat
            p = p.rstrip("/")
            if fnmatch.fnmatch(path, p) or path.startswith(p + "/") or fnmatch.fnmatch(path, p.replace("**/", "")):
                out = not neg
        return out

    for src in _image_paths():
        assert not ignored(src), f"COPY {src} but the dockerignore excludes it"
    for secret_or_bulk in (".git", ".venv", "out", ".env", ".aws"):
        assert ignored(secret_or_bulk), f"{secret_or_bulk} would be sent to the builder"


SECRET_PATTERNS = [
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",                                   # AWS access key id
    r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}",      # AWS secret key value
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"(?i)\b(password|passwd|token|secret)\s*[=:]\s*['\"]?[A-Za-z0-9/+_-]{16,}",
]


def test_no_secrets_under_deploy():
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        text = path.read_text()
        for pat in SECRET_PATTERNS:
            m = re.search(pat, text)
            assert not m, f"{path.relative_to(ROOT)}: looks like a credential: {m.group(0)[:12]}..."
    for k, rest in _dockerfile():
        if k in ("ENV", "ARG"):
            for name in re.findall(r"(?:^|\s)(\w+)(?==|\s|$)", rest):
                assert not re.search(r"(?i)(AWS_|SECRET|TOKEN|PASSWORD)", name), f"{k} {name}: a secret in the image"


def test_guide_covers_the_commands():
    text = (DEPLOY / "README.md").read_text()
    for needle in ["docker build -f deploy/Dockerfile", "TORCH_INDEX_URL", "kubectl apply",
                   "kubectl port-forward svc/curation-head-svc 8265:8265",
                   "curate submit pipelines/", "--address http://127.0.0.1:8265", "ray up deploy/cluster.yaml",
                   "ray dashboard deploy/cluster.yaml", "RAY_AUTH_TOKEN", "~/.ray/auth_token",
                   "AWS_ACCESS_KEY_ID", "IRSA", "object-store", "GPU"]:
        assert needle.lower() in text.lower(), f"deploy/README.md does not mention {needle!r}"
    for ref in _pipeline_refs(text):
        assert (ROOT / ref).is_file(), f"deploy/README.md refers to missing {ref}"
    # the guide's head Service name is the one KubeRay derives from the RayCluster's name
    (cluster,) = [d for d in _docs(KUBERAY / "raycluster.yaml") if d["kind"] == "RayCluster"]
    assert f"svc/{cluster['metadata']['name']}-head-svc" in text
