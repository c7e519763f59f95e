"""Helpers of the deployment tests: repository paths, a clean docker-compose runner, fixtures."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKER_DIR = ROOT / "docker"


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: the shell's WELFARE_EXCHANGE_*/AIRFLOW_* values (scripts/env.sh
    exports real local secrets) must neither leak into nor override what is being tested."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def docker_compose_binary() -> str:
    path = shutil.which("docker-compose")
    if not path:
        pytest.fail("docker-compose is not installed: run `make system-deps` (Debian package docker-compose)")
    return path


def run_compose(*args: str, env_file: pathlib.Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    """``docker-compose -f docker-compose.yaml --env-file ENV ARGS`` in the checkout, clean env."""
    return subprocess.run(
        [docker_compose_binary(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def parse_env_file(path: pathlib.Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values
