"""The shell scripts of the deployment (k8s/, the image scripts, build.sh) parse, stop at the first failure, and
the repository names no package registry: mirrors are read from the machine's own configuration at run time.
Running them needs root and the package registries; the deployment proof does that, not this suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([ROOT / "build.sh", *ROOT.glob("services/*.sh"), *ROOT.glob("k8s/**/*.sh")])
# Host names of the registries this project installs from (Debian, PyPI, npm) and of container registries.
REGISTRY_HOSTS = re.compile(
    r"deb\.debian\.org|security\.debian\.org|ftp\.[a-z.]*debian\.org|pypi\.org|pythonhosted\.org"
    r"|registry\.npmjs\.org|npmjs\.com|docker\.io|ghcr\.io|quay\.io|gcr\.io|registry\.k8s\.io")


def test_there_are_deployment_scripts() -> None:
    names = {script.relative_to(ROOT).as_posix() for script in SCRIPTS}
    assert {"build.sh", "services/build-base-image.sh", "k8s/apt-mirror.sh", "k8s/cluster/up.sh",
            "k8s/cluster/down.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda script: script.relative_to(ROOT).as_posix())
def test_a_script_parses_and_stops_at_the_first_failure_unless_it_says_why(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    sourced_only = "(sourced, not run)" in text
    # A teardown goes on past a failed step, on purpose and said so: the steps after it must still run.
    best_effort = re.search(r"set -uo pipefail +# no -e: ", text) is not None
    assert sourced_only or best_effort or "set -euo pipefail" in text


def test_no_file_of_the_repository_names_a_package_registry() -> None:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    offenders = []
    for name in filter(None, tracked.decode().split("\0")):
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".svg", ".pyc"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{name}: {match.group(0)}" for match in REGISTRY_HOSTS.finditer(text)]
    assert not offenders, offenders


def readme_commands() -> list[str]:
    """The shell commands of the README's code blocks, one per line."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readmes_test_command_then_the_deployment_proof() -> None:
    test_command = next(line for line in readme_commands() if "pytest" in line)
    steps = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line and not line.startswith(("#", "set ", "cd "))]
    # `|| exit`: under set -e a failure before the last command of an && list (the install) would not stop the run.
    assert steps == [f"{test_command} || exit", "bash k8s/verify.sh"]


def test_circleci_runs_the_same_two_steps() -> None:
    import yaml

    config = yaml.safe_load((ROOT / ".circleci" / "config.yml").read_text())
    commands = [step["run"]["command"] for job in config["jobs"].values() for step in job["steps"]
                if isinstance(step, dict) and "run" in step]
    test_command = next(line for line in readme_commands() if "pytest" in line)
    assert any(command.strip() == test_command for command in commands), commands
    assert any("bash k8s/verify.sh" in command for command in commands), commands
    assert set(config["workflows"]["ci"]["jobs"]) == set(config["jobs"])


# --- the deployment proof's runs of the suites inside the cluster -------------------------------------------------
VERIFY = ROOT / "k8s" / "verify.sh"


def _helm() -> str | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "delinkcious/k8s/v1.20.2/bin/helm"
    for candidate in (os.environ.get("HELM"), shutil.which("helm"), str(cache)):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _verify_assignment(name: str) -> str:
    """The line of verify.sh that assigns the top-level array NAME=(...)."""
    return next(line for line in VERIFY.read_text().splitlines() if line.startswith(f"{name}=("))


def _verify_array(name: str) -> list[str]:
    """A bash array verify.sh assigns at the top level, as bash reads it."""
    out = subprocess.run(["bash", "-c", f'{_verify_assignment(name)}\nprintf "%s\\n" "${{{name}[@]}}"'],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_the_suites_run_inside_the_cluster_exist() -> None:
    suites = _verify_array("LOAD_SUITES")
    assert suites and all((ROOT / "integration-test" / suite).is_file() for suite in suites), suites


@pytest.mark.skipif(_helm() is None, reason="no helm binary (HELM, PATH, or k8s/cluster/build.sh's cache)")
def test_the_pods_that_run_the_suites_inside_the_cluster_are_the_charts_helm_test_pod(tmp_path: Path) -> None:
    """Same image, security settings, account and labels (those the chart's NetworkPolicy admits to the gateway) as
    the chart's `helm test` pod, rendered from it with the installed values; only the name, the arguments and the
    users' tokens differ."""
    import yaml

    helm = _helm()
    values = ["-f", "k8s/cluster/values.yaml", "--set", "image.tag=9.9.9"]
    script = (f'source <(sed -n "/^in_cluster_pod_manifest() {{/,/^}}$/p" k8s/verify.sh)\n'
              f'{_verify_assignment("LOAD_SUITES")}\n{_verify_assignment("IN_CLUSTER_USERS")}\n'
              "in_cluster_pod_manifest\n")
    env = {"PATH": f"{Path(helm).parent}:/usr/bin:/bin", "RELEASE": "dlk", "NAMESPACE": "shop",
           "CHART": "helm/delinkcious", "WORK": str(tmp_path), "PYTHON": sys.executable}
    run = subprocess.run(["bash", "-c", f"set -euo pipefail\ninstall_values=({' '.join(values)})\n{script}"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    pod = yaml.safe_load(run.stdout)
    chart_pod = yaml.safe_load(subprocess.run(
        [helm, "template", "dlk", "helm/delinkcious", "--namespace", "shop", *values,
         "--show-only", "templates/tests/test-smoke.yaml"], cwd=ROOT, capture_output=True, text=True,
        check=True).stdout)

    assert pod["metadata"]["generateName"] == "dlk-suites-" and "name" not in pod["metadata"]
    assert pod["metadata"]["labels"] == chart_pod["metadata"]["labels"]
    assert not any(key.startswith("helm.sh/") for key in pod["metadata"]["annotations"])
    spec, chart_spec = pod["spec"], chart_pod["spec"]
    for key in ("restartPolicy", "serviceAccountName", "automountServiceAccountToken", "securityContext"):
        assert spec[key] == chart_spec[key], key
    (container,), (chart_container,) = spec["containers"], chart_spec["containers"]
    for key in ("image", "imagePullPolicy", "env", "resources", "securityContext"):
        assert container[key] == chart_container[key], key
    addresses = [arg for arg in chart_container["args"] if arg.startswith(("--base-url=", "--public-url="))]
    users = _verify_array("IN_CLUSTER_USERS")
    assert container["args"] == [*_verify_array("LOAD_SUITES"), *addresses, "--no-local-targets", "-x", "-q",
                                 *(f"--token={user}=@/run/secrets/suite-tokens/{user}" for user in users)]
    assert addresses[0] == "--base-url=http://dlk-delinkcious-api-gateway:8080"  # the gateway's Service, not one pod
    assert container["volumeMounts"] == [*chart_container["volumeMounts"],
                                         {"name": "tokens", "mountPath": "/run/secrets/suite-tokens", "readOnly": True}]
    assert spec["volumes"] == [*chart_spec["volumes"],
                               {"name": "tokens", "secret": {"secretName": "dlk-suite-tokens", "defaultMode": 0o440}}]
