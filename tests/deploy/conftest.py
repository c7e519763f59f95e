"""Fixtures of the deployment tests: the compose file, as docker-compose resolves it and as written."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.helpers import COMPOSE_FILE, run_compose


@pytest.fixture(scope="session")
def compose_config() -> dict:
    """The configuration as docker-compose resolves it with .env.example (all profiles)."""
    result = run_compose("config")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="session")
def compose_raw() -> dict:
    """The compose file as written (YAML anchors merged, ${VARIABLES} not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())
