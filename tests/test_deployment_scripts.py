"""The shell scripts of the deployment (k8s/, the image scripts, build.sh) parse, stop at the first failure, and
the repository names no package registry: mirrors are read from the machine's own configuration at run time.
Running them needs root and the package registries; the deployment proof does that, not this suite."""

from __future__ import annotations

import re
import subprocess
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
    assert steps == [test_command, "bash k8s/verify.sh"]


def test_circleci_runs_the_same_two_steps() -> None:
    import yaml

    config = yaml.safe_load((ROOT / ".circleci" / "config.yml").read_text())
    commands = [step["run"]["command"] for job in config["jobs"].values() for step in job["steps"]
                if isinstance(step, dict) and "run" in step]
    test_command = next(line for line in readme_commands() if "pytest" in line)
    assert any(command.strip() == test_command for command in commands), commands
    assert any("bash k8s/verify.sh" in command for command in commands), commands
    assert set(config["workflows"]["ci"]["jobs"]) == set(config["jobs"])
