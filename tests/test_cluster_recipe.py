"""The cluster recipe (README "Growing past one machine").

docker-compose.yml and the Dockerfile are read, not run (this machine has no Docker engine): the services exist
and are wired to each other as `avgen serve` and `ray start` expect. The same split then runs for real without
Docker: `ray start --head` (no CPUs: it takes no work) in one process, `ray start --address` (the worker node) in
another, `avgen serve` joined through RAY_ADDRESS in a third, and a job submitted over HTTP runs on the worker node.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from test_api import _free_port, client, serve
from test_service import session_processes, sse_events

from avgen.files import file_hash
from avgen.media import read_mp4

ROOT = Path(__file__).parents[1]
# the ray command of the environment running the tests
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray") or "ray"


# --- docker-compose.yml and the Dockerfile, as files ---


def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def words(command: str | list[str]) -> list[str]:
    """A service's command as words; a `sh -c "A && exec B"` wrapper gives the words of A and B."""
    command = shlex.split(command) if isinstance(command, str) else list(command)
    if command[:2] == ["sh", "-c"]:
        return [w for part in command[2].split("&&") for w in shlex.split(part) if w != "exec"]
    return command


def option(command: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in the first place it appears."""
    for i, word in enumerate(command):
        if word == name:
            return command[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def commands(command: list[str], program: str) -> list[list[str]]:
    """Each run of `program` in the words of a service's command, from the program's name to the next one's."""
    starts = [i for i, w in enumerate(command) if w in ("ray", "avgen")] + [len(command)]
    return [command[a:b] for a, b in zip(starts, starts[1:]) if command[a] == program]


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, one a line: comments dropped, continued lines (ending in \\) joined."""
    instructions, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not line.strip() or (line.lstrip().startswith("#") and not current):
            continue
        current += " " + line.strip().removesuffix("\\").strip()
        if not line.rstrip().endswith("\\"):
            instructions.append(current.strip())
            current = ""
    return instructions


def test_the_compose_file_has_a_head_scalable_workers_and_the_api_all_built_from_the_dockerfile():
    services = compose()["services"]
    assert {"ray-head", "ray-worker", "api"} <= set(services)
    for name in ("ray-head", "ray-worker", "api"):
        build = services[name]["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        assert (context / dockerfile).resolve() == (ROOT / "Dockerfile").resolve(), name
        assert services[name]["image"] == services["ray-head"]["image"], "one image for every service"
    worker = services["ray-worker"]
    # `--scale ray-worker=N` needs replicas without a fixed name or a published host port
    assert "container_name" not in worker and not worker.get("ports")


def test_the_workers_and_the_api_join_the_head_at_the_address_it_listens_on():
    services = compose()["services"]
    head = commands(words(services["ray-head"]["command"]), "ray")
    assert len(head) == 1 and head[0][:2] == ["ray", "start"] and "--head" in head[0] and "--block" in head[0]
    head_address = f"ray-head:{option(head[0], '--port')}"
    assert option(head[0], "--num-cpus") == "0" and option(head[0], "--num-gpus") == "0", "the head takes no work"

    worker = commands(words(services["ray-worker"]["command"]), "ray")
    assert len(worker) == 1 and worker[0][:2] == ["ray", "start"] and "--block" in worker[0]
    assert option(worker[0], "--address") == head_address

    api = services["api"]
    assert api["environment"]["RAY_ADDRESS"] == head_address
    # a Ray driver needs a Ray node on its own machine: the API's container joins as one that takes no work
    (node,) = commands(words(api["command"]), "ray")
    assert node[:2] == ["ray", "start"] and option(node, "--address") in (head_address, "$RAY_ADDRESS")
    assert option(node, "--num-cpus") == "0" and option(node, "--num-gpus") == "0"
    for name in ("ray-worker", "api"):
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy", name
    for name in ("ray-head", "ray-worker", "api"):  # the object store lives in /dev/shm (docker's default: 64 MB)
        assert services[name]["shm_size"], name
    # every node's fixed ports are the same (each container has its own address), so that firewalls can allow them
    fixed = ("--node-manager-port", "--object-manager-port", "--min-worker-port", "--max-worker-port")
    nodes = [head[0], worker[0], node]
    assert all(option(n, "--node-manager-port") for n in nodes)
    assert {tuple(option(n, f) for f in fixed) for n in nodes} == {tuple(option(head[0], f) for f in fixed)}


def test_the_api_serves_on_all_interfaces_with_keys_a_data_volume_and_a_readyz_healthcheck():
    spec = compose()
    api = spec["services"]["api"]
    (serve_command,) = commands(words(api["command"]), "avgen")
    assert serve_command[:2] == ["avgen", "serve"]
    assert option(serve_command, "--host") == "0.0.0.0" and option(serve_command, "--workers") == "auto"
    port = option(serve_command, "--port") or "8000"
    assert any(str(p).endswith(f":{port}") for p in api["ports"]), api["ports"]
    # keys: a non-loopback host refuses to start without them
    keys = option(serve_command, "--api-keys-file")
    secret = Path(keys).name
    assert keys == f"/run/secrets/{secret}" and secret in api["secrets"] and secret in spec["secrets"]
    # the data dir is a named volume
    data = option(serve_command, "--data-dir")
    volumes = {v.split(":")[1]: v.split(":")[0] for v in api["volumes"]}
    assert data in volumes and volumes[data] in spec["volumes"]
    check = " ".join(api["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/readyz" in check
    # SIGTERM gives running jobs --grace-seconds (30 by default) before they go back to the queue
    grace = float(option(serve_command, "--grace-seconds") or 30)
    assert float(api["stop_grace_period"].rstrip("s")) > grace


def test_the_head_publishes_its_dashboard_on_loopback_and_has_a_healthcheck_on_its_address():
    head = compose()["services"]["ray-head"]
    (start,) = commands(words(head["command"]), "ray")
    port = option(start, "--dashboard-port")
    assert head["ports"] == [f"127.0.0.1:{port}:{port}"]  # the dashboard has no login of its own
    assert head["healthcheck"]["test"][1:] == ["ray", "status", f"--address=ray-head:{option(start, '--port')}"]


def test_ray_token_auth_is_on_for_every_node_with_one_secret():
    spec = compose()
    for name, service in spec["services"].items():
        env = service["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        secret = Path(env["RAY_AUTH_TOKEN_PATH"]).name
        assert env["RAY_AUTH_TOKEN_PATH"] == f"/run/secrets/{secret}" and secret in service["secrets"], name
        assert secret in spec["secrets"]


def test_the_gpu_override_reserves_gpus_for_the_workers_only():
    gpu = compose("docker-compose.gpu.yml")["services"]
    assert set(gpu) == {"ray-worker"}
    (device,) = gpu["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"


def test_the_dockerfile_installs_the_package_with_its_weights_for_a_user_that_is_not_root():
    lines = dockerfile()
    assert lines[0] == "FROM python:3.11-slim"
    copied = {w.rstrip("/") for line in lines if line.startswith("COPY ") for w in shlex.split(line)[1:-1]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]}
    assert {"pyproject.toml", "README.md", *packages} <= copied
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert "pip install" in runs and "default_checkpoint()" in runs  # the build fails without the weights
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # the weights reach the build: .dockerignore leaves them in
    shipped = [p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/weights/*.safetensors")]
    assert "avgen/weights/tiny.safetensors" in shipped
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip()[:1] not in ("", "#")]
    for path in shipped:
        hits = [p for p in ignored if fnmatch.fnmatch(path, p.lstrip("/")) or path.startswith(p.strip("/") + "/")]
        assert not hits or any(p.startswith("!") for p in ignored), (path, hits)


def test_the_distribution_lists_every_package_so_a_plain_install_has_all_the_code():
    """The image installs the package as a user would (not editable): a package missing from pyproject's list
    (api.routes once was) would be left out of it, and the service could not start."""
    from setuptools import find_packages

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(ROOT), include=[f"{top}*" for top in {p.split(".")[0] for p in listed}]))
    assert listed == found


def test_docker_compose_config_accepts_the_files_where_docker_compose_exists(tmp_path):
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and subprocess.run([*command, "version"], capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("no docker compose on this machine (the files are checked as YAML above)")
    # the secrets must exist for `config`: a copy of the files next to made-up ones
    for name in ("docker-compose.yml", "docker-compose.gpu.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "secrets").mkdir()
    for secret in compose()["secrets"].values():
        (tmp_path / secret["file"]).write_text(secrets.token_hex(32) + "\n")
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml"]
    r = subprocess.run([*command, *files, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- the same split without Docker, for real ---


def _stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """End a `ray start --block` and everything it started: it stops its processes on SIGTERM; what is left of
    its process group after `timeout` is killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _ray_start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """`ray start ... --block` in a session of its own (its processes are found, and ended, by that session)."""
    return subprocess.Popen(
        [RAY, "start", *args, "--block"],
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 - the child holds it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def split(tmp_path_factory, small_checkpoint):
    """A Ray head and `avgen serve` joined to it: the worker node is started by the test."""
    root = tmp_path_factory.mktemp("split")
    # Ray's own folder: private to this test (other Rays on this machine live in /tmp/ray), and short, since the
    # unix sockets inside it may not have paths longer than 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="avgen-ray-"))
    token = root / "ray-token.txt"
    token.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # every node imports this checkout's workers/ and avgen/, as in the image
        "RAY_AUTH_MODE": "token",  # as docker-compose.yml does: the cluster's one token, in a file
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)  # it would win over the file
    # ports of our own: other Rays run on this machine (Ray's defaults would collide with theirs)
    gcs = _free_port()
    head = _ray_start(
        ["--head", "--port", str(gcs), "--num-cpus", "0", "--num-gpus", "0", "--temp-dir", str(temp / "head"),
         "--include-dashboard=false", "--dashboard-port", str(_free_port()),
         "--dashboard-agent-listen-port", str(_free_port()), "--ray-client-server-port", str(_free_port())],
        root / "head.log", env,
    )  # fmt: skip
    address = f"127.0.0.1:{gcs}"
    procs, serve_sid = {"head": head}, None
    try:
        deadline = time.monotonic() + 120
        status = [RAY, "status", f"--address={address}"]  # the compose file's healthcheck of the head
        while subprocess.run(status, env=env, capture_output=True).returncode:  # 0: the GCS answers, token and all
            assert head.poll() is None and time.monotonic() < deadline, (root / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        weights = root / "weights"
        weights.mkdir()
        shutil.copy(small_checkpoint, weights / "tiny.safetensors")
        with serve(root, workers="auto", args=("--threads", "1"), RAY_ADDRESS=address, **env) as server:
            serve_sid = server["proc"].pid
            yield {
                "server": server,
                "procs": procs,
                "address": address,
                "env": env,
                "temp": temp,
                "root": root,
                "weights": weights,
                "checkpoint": small_checkpoint,
            }
    finally:
        for proc in reversed(procs.values()):
            _stop_group(proc)
        deadline = time.monotonic() + 30
        while (left := [p for proc in procs.values() for p in session_processes(proc.pid)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"Ray processes left behind: {left}"
    assert serve_sid is None or not session_processes(serve_sid)


def test_a_job_submitted_over_http_runs_on_the_worker_node_that_joined_the_head(split, tmp_path):
    server, procs, env = split["server"], split["procs"], split["env"]
    # the head has no CPU, so the pool's actor waits for a worker node
    assert httpx.get(f"{server['url']}/readyz", timeout=5).status_code == 503
    # the weights are read where the model is loaded: on the worker node (serve's environment has no
    # AVGEN_WEIGHTS_DIR)
    procs["worker"] = _ray_start(
        ["--address", split["address"], "--num-cpus", "1", "--num-gpus", "0", "--temp-dir", str(split["temp"] / "worker"),
         "--dashboard-agent-listen-port", str(_free_port())],
        split["root"] / "worker.log", {**env, "AVGEN_WEIGHTS_DIR": str(split["weights"])},
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while httpx.get(f"{server['url']}/readyz", timeout=5).status_code != 200:
        assert procs["worker"].poll() is None, (split["root"] / "worker.log").read_text()[-3000:]
        assert time.monotonic() < deadline, (server["root"] / "serve.log").read_text()[-3000:]
        time.sleep(0.5)

    with client(server) as c:
        r = c.post("/v1/jobs", json={"kind": "generate", "text": "Hello there", "seconds": 1, "score": False})
        assert r.status_code == 202, r.text
        job = r.json()
        events = sse_events(c, job["urls"]["events"])
        assert events[-1]["type"] == "succeeded", events[-1]
        done = c.get(job["urls"]["self"]).json()
        result = c.get(job["urls"]["result"])
    assert result.status_code == 200
    (tmp_path / "result.mp4").write_bytes(result.content)
    assert len(read_mp4(tmp_path / "result.mp4").frames) == 25
    # the model that made it is the worker node's (its AVGEN_WEIGHTS_DIR), not the shipped one
    assert done["result"]["metadata"]["avgen_checkpoint"] == file_hash(split["checkpoint"])
    # the actor's process is one of the worker node's (its `ray start` session), none of the head's or serve's
    actors = {name: [p for p in session_processes(proc.pid) if "ray::WorkerActor" in p] for name, proc in procs.items()}
    actors["serve"] = [p for p in session_processes(server["proc"].pid) if "ray::WorkerActor" in p]
    assert len(actors["worker"]) == 1 and not actors["head"] and not actors["serve"], actors
    # serve joined the head's Ray (its driver's logs are in the head's --temp-dir) and started none of its own
    assert list(split["temp"].glob("head/session_*/logs/python-core-driver-*")), (
        "serve's driver is not in the head's session"
    )
    assert not [p for p in session_processes(server["proc"].pid) if "raylet" in p or "gcs_server" in p]
