"""The images that are not service images (k8s/images/, integration-test/Dockerfile), without building them:
the recipes pass the Dockerfile linter, build on the BASE_IMAGE argument, run unprivileged (the Python images) or
drop root in their entrypoint (the stand-ins, as the official images do), keep their package bounds in line with
pyproject.toml, and the stand-ins' entrypoints behave as the official images' subset the deployment relies on,
run here with stand-in commands on PATH. Building and running them needs root and buildah:
k8s/images/build.sh, and k8s/images/README.md says how they were proved."""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.test_deployment_scripts import REGISTRY_HOSTS
from tests.test_dockerfiles import exec_form, hadolint, instructions

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "k8s" / "images"
STAND_INS = IMAGES / "stand-ins" / "Dockerfile"
IDENTITY_PROVIDER = IMAGES / "identity-provider" / "Dockerfile"
SUITE = ROOT / "integration-test" / "Dockerfile"
PYTHON_IMAGES = (IDENTITY_PROVIDER, SUITE)
SERVERS = ("postgres", "redis", "nats")
OWN_FILES = [STAND_INS, IDENTITY_PROVIDER, SUITE, IMAGES / "build.sh", IMAGES / "README.md",
             *sorted((IMAGES / "stand-ins").glob("*.sh"))]  # fmt: skip


def parsed(dockerfile: Path) -> list[tuple[str, str]]:
    return instructions(dockerfile.read_text())


def stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions by its name (or its position), the FROM line first."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for instruction, arguments in parsed(dockerfile):
        if instruction == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(found))
            current = found.setdefault(name, [])
        if current is not None:
            current.append((instruction, arguments))
    return found


def global_arguments(dockerfile: Path) -> dict[str, str | None]:
    """The ARGs before the first FROM: name -> default (None when it has none)."""
    arguments: dict[str, str | None] = {}
    for instruction, text in parsed(dockerfile):
        if instruction == "FROM":
            break
        if instruction == "ARG":
            name, equals, default = text.partition("=")
            arguments[name] = default.strip('"') if equals else None
    return arguments


def only(stage: list[tuple[str, str]], instruction: str) -> str:
    [arguments] = [text for name, text in stage if name == instruction]
    return arguments


def argument_default(stage: list[tuple[str, str]], name: str) -> str:
    [default] = [text.partition("=")[2].strip('"') for instruction, text in stage
                 if instruction == "ARG" and text.partition("=")[0] == name]  # fmt: skip
    return default


def pyproject_requirement(package: str) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    [requirement] = {r for r in every if re.match(rf"{re.escape(package)}\s*[<>=!~]", r)}
    return requirement.replace(" ", "")


@pytest.mark.parametrize("dockerfile", [STAND_INS, *PYTHON_IMAGES], ids=lambda path: path.relative_to(ROOT).as_posix())
def test_recipe_passes_hadolint(dockerfile: Path) -> None:
    result = subprocess.run([hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_file_names_a_registry_or_a_mirror() -> None:
    """The bases are image names without a registry; apt uses the base's sources, pip the machine's settings."""
    offenders = [f"{path.relative_to(ROOT)}: {match.group(0)}" for path in OWN_FILES + [ROOT / "integration-test" /
                 ".dockerignore"] for match in REGISTRY_HOSTS.finditer(path.read_text())]  # fmt: skip
    assert not offenders, offenders
    for dockerfile in (STAND_INS, *PYTHON_IMAGES):  # the instructions reach only the container itself
        urls = re.findall(r"https?://[^\s'\"\]]+", " ".join(text for _, text in parsed(dockerfile)))
        assert all(url.startswith("http://127.0.0.1:") for url in urls), urls
        assert urls or dockerfile == SUITE, "the health checks probe the container itself"


# The Python images: the identity provider and the suite.


@pytest.mark.parametrize("dockerfile", PYTHON_IMAGES, ids=lambda path: path.parent.name)
def test_python_images_build_both_stages_on_the_base_image_argument(dockerfile: Path) -> None:
    assert global_arguments(dockerfile) == {"BASE_IMAGE": "python:3.11-slim-bookworm"}
    froms = [text.split()[0] for instruction, text in parsed(dockerfile) if instruction == "FROM"]
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


@pytest.mark.parametrize("dockerfile", PYTHON_IMAGES, ids=lambda path: path.parent.name)
def test_python_images_run_unprivileged_without_pip_or_the_build_settings(dockerfile: Path) -> None:
    build, final = stages(dockerfile).values()
    assert only(final, "USER") == "10001"
    assert any(instruction == "RUN" and "--uid 10001" in text for instruction, text in final)
    # pip settings are build arguments of the build stage that default to nothing; pip leaves the venv there.
    pip_settings = [text for instruction, text in build if instruction == "ARG" and text.startswith("PIP_")]
    assert len(pip_settings) == 6 and all(text.endswith("=") for text in pip_settings), pip_settings
    assert not [text for instruction, text in final if instruction in ("ARG", "ENV") and "PIP_" in text]
    [install] = [text for instruction, text in build if instruction == "RUN"]
    assert "pip install --no-cache-dir" in install and "pip uninstall --yes --quiet setuptools pip" in install
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    environment = " ".join(text for instruction, text in final if instruction == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in environment and "PATH=/opt/venv/bin:$PATH" in environment


def test_identity_provider_listens_on_every_address_and_checks_its_discovery_document() -> None:
    build, final = stages(IDENTITY_PROVIDER).values()
    assert argument_default(build, "REQUIREMENT") == pyproject_requirement("oidc-provider-mock")
    assert exec_form(only(final, "ENTRYPOINT")) == ["oidc-provider-mock", "--host", "0.0.0.0", "--port", "9400"]
    assert only(final, "EXPOSE") == "9400"
    options, _, command = only(final, "HEALTHCHECK").partition("CMD")
    python, flag, code = exec_form(command.strip())
    assert (python, flag) == ("python3", "-c") and "--timeout=" in options
    assert "urllib.request.urlopen('http://127.0.0.1:9400/.well-known/openid-configuration'" in code
    ast.parse(code)


def module_level_imports(path: Path) -> set[str]:
    """Top-level packages imported at module level (what collecting the file needs)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            names.add(node.module.split(".")[0])
    return names


def test_suite_image_installs_what_collecting_the_suite_imports() -> None:
    build, final = stages(SUITE).values()
    requirements = argument_default(build, "REQUIREMENTS").split()
    assert pyproject_requirement("pytest") in requirements and pyproject_requirement("requests") in requirements
    installed = {re.split(r"[<>=!~\[]", requirement)[0] for requirement in requirements}
    suite = sorted((ROOT / "integration-test").glob("*.py"))
    local = {path.stem for path in suite}
    imported = set().union(*(module_level_imports(path) for path in suite)) - local - set(sys.stdlib_module_names)
    assert imported == installed, "the image installs exactly what the suite imports when it is collected"
    # schemathesis (heavy) is imported by a fixture only, so the suite collects without it.
    assert "schemathesis" not in imported and "import schemathesis" in (ROOT / "integration-test" /
                                                                        "conftest.py").read_text()


def test_suite_image_holds_the_suite_and_runs_pytest_without_writing() -> None:
    _, final = stages(SUITE).values()
    assert ("COPY", "*.py /suite/") in final and only(final, "WORKDIR") == "/suite"
    assert exec_form(only(final, "ENTRYPOINT")) == ["python3", "-m", "pytest", "-p", "no:cacheprovider"]
    environment = " ".join(text for instruction, text in final if instruction == "ENV")
    assert "HYPOTHESIS_STORAGE_DIRECTORY=/tmp/" in environment
    ignored = (ROOT / "integration-test" / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1] == "!*.py" and "**/__pycache__" in ignored


# The stand-ins.


def test_stand_ins_are_one_recipe_with_a_stage_per_server() -> None:
    assert global_arguments(STAND_INS) == {"BASE_IMAGE": "debian:bookworm-slim", "SERVER": None}
    named = stages(STAND_INS)
    assert list(named) == ["debian", *SERVERS, "stand-in"]
    assert named["debian"][0] == ("FROM", "${BASE_IMAGE} AS debian")
    assert all(named[server][0] == ("FROM", f"debian AS {server}") for server in SERVERS)
    # The image is the stage SERVER names; an instruction after FROM so buildah leaves no working container.
    assert named["stand-in"][0] == ("FROM", "${SERVER} AS stand-in") and len(named["stand-in"]) > 1


@pytest.mark.parametrize("server", SERVERS)
def test_stand_in_starts_as_the_official_image_does(server: str) -> None:
    stage = stages(STAND_INS)[server]
    user = {"postgres": "postgres", "redis": "redis", "nats": "nats"}[server]
    [install] = [text for instruction, text in stage if instruction == "RUN"]
    assert f"--gid 999 {user}" in install and f"--uid 999 --gid {user}" in install
    assert "apt-get install -y --no-install-recommends" in install and "rm -rf /var/lib/apt/lists/*" in install
    assert ("COPY", f"--chmod=0755 {server}-entrypoint.sh /usr/local/bin/docker-entrypoint.sh") in stage
    assert exec_form(only(stage, "ENTRYPOINT")) == ["docker-entrypoint.sh"]
    assert not [text for instruction, text in stage if instruction == "USER"], "root at first, as the official image"
    script = (IMAGES / "stand-ins" / f"{server}-entrypoint.sh").read_text()
    assert f'exec setpriv --reuid={user} --regid={user} --init-groups -- "${{BASH_SOURCE[0]}}" "$@"' in script
    assert script.rstrip().endswith('exec "$@"')
    options, _, command = only(stage, "HEALTHCHECK").partition("CMD")
    assert exec_form(command.strip()) and "--timeout=" in options
    default_command = exec_form(only(stage, "CMD"))
    expected = {"postgres": (["postgres"], "postgresql-15", "5432"), "redis": (["redis-server"], "redis-server", "6379"),
                "nats": (["nats-server", "--config", "/etc/nats/nats-server.conf"], "nats-server wget", "4222 8222")}
    assert (default_command, only(stage, "EXPOSE")) == (expected[server][0], expected[server][2])
    assert f"--no-install-recommends {expected[server][1]} " in install + " "


def test_postgres_stand_in_sets_the_official_variables_and_listens_everywhere() -> None:
    stage = stages(STAND_INS)["postgres"]
    environment = " ".join(text for instruction, text in stage if instruction == "ENV")
    assert "PGDATA=/var/lib/postgresql/data" in environment and "/usr/lib/postgresql/15/bin" in environment
    assert only(stage, "VOLUME") == "/var/lib/postgresql/data" and only(stage, "STOPSIGNAL") == "SIGINT"
    [install] = [text for instruction, text in stage if instruction == "RUN"]
    assert "create_main_cluster = false" in install and "listen_addresses" in install
    assert "ssl-cert-snakeoil.key" in install, "no private key shipped in the image"
    assert exec_form(only(stage, "HEALTHCHECK").partition("CMD")[2].strip()) == ["pg_isready", "-q", "-U", "postgres"]


# The entrypoints, run on this machine with recording stand-ins for the servers and for id, setpriv, find, mkdir.


def fake_commands(folder: Path, uid: int, names: list[str]) -> dict[str, str]:
    """Executables that log their name and arguments (one per line, NUL-free) to folder/calls; `id -u` says uid."""
    folder.mkdir()
    log = folder / "calls"
    for name in names:
        script = folder / name
        script.write_text(f'#!/bin/sh\nprintf "%s" "{name}" >>"{log}"\nfor a in "$@"; do printf " [%s]" "$a" >>"{log}"; '
                          f'done\necho >>"{log}"\n')  # fmt: skip
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (folder / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (folder / "id").chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "HOME": str(folder)}


def calls(folder: Path) -> list[str]:
    log = folder / "calls"
    return log.read_text().splitlines() if log.exists() else []


def run_entrypoint(server: str, arguments: list[str], environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    script = IMAGES / "stand-ins" / f"{server}-entrypoint.sh"
    return subprocess.run(["bash", str(script), *arguments], env=environment, cwd=cwd, capture_output=True,
                          text=True, timeout=30)  # fmt: skip


@pytest.mark.parametrize(("arguments", "expected"), [
    (["--appendonly", "yes"], "redis-server [--appendonly] [yes]"),
    (["/etc/redis.conf"], "redis-server [/etc/redis.conf]"),
    ([], "redis-server"),
    (["sh", "-c", "exec redis-server - <<EOF"], "sh [-c] [exec redis-server - <<EOF]"),
    (["redis-server", "-"], "redis-server [-]"),
])  # fmt: skip
def test_redis_entrypoint_runs_the_command_it_is_given(tmp_path: Path, arguments: list[str], expected: str) -> None:
    environment = fake_commands(tmp_path / "bin", 999, ["redis-server", "sh", "setpriv", "find"])
    result = run_entrypoint("redis", arguments, environment, tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path / "bin") == [expected]


def test_redis_entrypoint_drops_root_for_the_server_only(tmp_path: Path) -> None:
    environment = fake_commands(tmp_path / "bin", 0, ["redis-server", "sh", "setpriv", "find"])
    assert run_entrypoint("redis", ["--port", "1"], environment, tmp_path).returncode == 0
    script = str(IMAGES / "stand-ins" / "redis-entrypoint.sh")
    assert calls(tmp_path / "bin") == [
        "find [.] [!] [-user] [redis] [-exec] [chown] [redis:redis] [{}] [+]",
        f"setpriv [--reuid=redis] [--regid=redis] [--init-groups] [--] [{script}] [redis-server] [--port] [1]",
    ]
    (tmp_path / "bin" / "calls").unlink()
    assert run_entrypoint("redis", ["sh", "-c", "true"], environment, tmp_path).returncode == 0
    assert calls(tmp_path / "bin") == ["sh [-c] [true]"], "as the official image: other commands run as they are"


@pytest.mark.parametrize(("arguments", "expected"), [
    ([], "nats-server"),
    (["--jetstream", "--store_dir", "/data"], "nats-server [--jetstream] [--store_dir] [/data]"),
    (["-js"], "nats-server [-js]"),
    (["sh", "-c", "x"], "sh [-c] [x]"),
])  # fmt: skip
def test_nats_entrypoint_runs_the_command_it_is_given(tmp_path: Path, arguments: list[str], expected: str) -> None:
    environment = fake_commands(tmp_path / "bin", 999, ["nats-server", "sh", "setpriv", "find", "mkdir"])
    result = run_entrypoint("nats", arguments, environment, tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path / "bin") == [expected]


def test_nats_entrypoint_never_runs_the_server_as_root(tmp_path: Path) -> None:
    environment = fake_commands(tmp_path / "bin", 0, ["nats-server", "setpriv", "find", "mkdir"])
    assert run_entrypoint("nats", ["--jetstream"], environment, tmp_path).returncode == 0
    script = str(IMAGES / "stand-ins" / "nats-entrypoint.sh")
    assert calls(tmp_path / "bin") == [
        "mkdir [-p] [/data]",
        "find [/data] [!] [-user] [nats] [-exec] [chown] [nats:nats] [{}] [+]",
        f"setpriv [--reuid=nats] [--regid=nats] [--init-groups] [--] [{script}] [nats-server] [--jetstream]",
    ]


@pytest.fixture
def postgres_commands(tmp_path: Path) -> dict[str, str]:
    """A recording `postgres`, and an `initdb` that records its arguments and the password its --pwfile holds,
    then makes what initdb makes (PG_VERSION, pg_hba.conf) in PGDATA."""
    environment = fake_commands(tmp_path / "bin", 999, ["postgres", "setpriv", "find"])
    initdb = tmp_path / "bin" / "initdb"
    initdb.write_text(f"""#!/usr/bin/env bash
set -euo pipefail
line=initdb
for a in "$@"; do
  line+=" [$a]"
  if [[ $a == --pwfile=* ]]; then line+=" password=$(cat "${{a#--pwfile=}}")"; fi
done
echo "$line" >>"{tmp_path / 'bin' / 'calls'}"
echo 15 >"$PGDATA/PG_VERSION"
echo "local all all trust" >"$PGDATA/pg_hba.conf"
""")
    initdb.chmod(0o755)
    return {**environment, "PGDATA": str(tmp_path / "data" / "pgdata")}


def test_postgres_entrypoint_initialises_an_empty_data_directory_once(tmp_path: Path, postgres_commands) -> None:
    (tmp_path / "password").write_text("it's a secret\n")
    environment = {**postgres_commands, "POSTGRES_PASSWORD_FILE": str(tmp_path / "password")}
    result = run_entrypoint("postgres", ["-c", "port=1"], environment, tmp_path)
    assert result.returncode == 0, result.stderr
    [initdb, postgres] = calls(tmp_path / "bin")
    assert initdb.startswith("initdb [--username=postgres] [--encoding=UTF8] [--locale=C.UTF-8] [--auth-local=trust] "
                             "[--auth-host=scram-sha-256] [--pwfile=/dev/fd/")  # fmt: skip
    assert initdb.endswith(" password=it's a secret"), "the file's password, without its newline, never in argv"
    assert postgres == "postgres [-c] [port=1]"
    data = Path(environment["PGDATA"])
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert (data / "pg_hba.conf").read_text().splitlines()[-1] == "host all all all scram-sha-256"
    # Started again on the data: no second initdb.
    (tmp_path / "bin" / "calls").unlink()
    assert run_entrypoint("postgres", ["postgres"], environment, tmp_path).returncode == 0
    assert calls(tmp_path / "bin") == ["postgres"]


def test_postgres_entrypoint_refuses_to_initialise_without_a_password(tmp_path: Path, postgres_commands) -> None:
    result = run_entrypoint("postgres", ["postgres"], postgres_commands, tmp_path)
    assert result.returncode == 1 and "POSTGRES_PASSWORD_FILE" in result.stderr
    (tmp_path / "password").write_text("x")
    both = {**postgres_commands, "POSTGRES_PASSWORD_FILE": str(tmp_path / "password"), "POSTGRES_PASSWORD": "y"}
    result = run_entrypoint("postgres", ["postgres"], both, tmp_path)
    assert result.returncode == 1 and "exclusive" in result.stderr
    assert calls(tmp_path / "bin") == []


def test_postgres_entrypoint_runs_other_commands_as_they_are(tmp_path: Path, postgres_commands) -> None:
    environment = fake_commands(tmp_path / "more", 0, ["pg_isready"])
    environment["PATH"] = f"{tmp_path / 'more'}:{postgres_commands['PATH']}"
    result = run_entrypoint("postgres", ["pg_isready", "-q"], {**postgres_commands, **environment}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path / "more") == ["pg_isready [-q]"] and calls(tmp_path / "bin") == []


def test_entrypoints_are_valid_bash_and_shellcheck_clean() -> None:
    scripts = [*sorted((IMAGES / "stand-ins").glob("*.sh")), IMAGES / "build.sh"]
    assert [script.name for script in scripts] == [f"{server}-entrypoint.sh" for server in sorted(SERVERS)] + ["build.sh"]
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert "\nset -euo pipefail\n" in script.read_text()
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (the checks above ran)")
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_build_script_names_each_image_and_refuses_unknown_ones() -> None:
    text = (IMAGES / "build.sh").read_text()
    for name in ("localhost/delinkcious-postgres:15", "localhost/delinkcious-redis:7", "localhost/delinkcious-nats:2.9",
                 "delinkcious/identity-provider:$version", "delinkcious/integration-test:$version"):  # fmt: skip
        assert name in text
    assert "buildah bud --isolation chroot --format docker --layers" in text
    result = subprocess.run([str(IMAGES / "build.sh"), "no-such-image"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_build_script_passes_pip_settings_as_build_sh_does(tmp_path: Path) -> None:
    """It takes ./build.sh's pip-build-args; here with one index setting and one local-only setting."""
    assert "./build.sh pip-build-args buildah" in (IMAGES / "build.sh").read_text()
    environment = {**os.environ, "PYTHON": sys.executable, "PIP_CONFIG_FILE": os.devnull,
                   "PIP_INDEX_URL": "http://127.0.0.1:1/simple", "PIP_FIND_LINKS": str(tmp_path)}  # fmt: skip
    result = subprocess.run([str(ROOT / "build.sh"), "pip-build-args", "buildah"], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) % 2 == 0 and set(lines[::2]) <= {"--build-arg", "--volume"}, lines
    assert "PIP_INDEX_URL=http://127.0.0.1:1/simple" in lines[1::2]
    assert not [line for line in lines if str(tmp_path) in line], "local folders stay out of the image"
