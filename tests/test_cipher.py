"""Credentials at rest: the key's sources, rotation, and the start-up errors of a missing or bad key."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from status_service import create_app
from status_service.cipher import Cipher, CipherError, from_settings
from status_service.settings import Settings, SettingsError
from tests.conftest import REPO, TEST_SECRET_KEY


def test_the_embedded_default_makes_one_key_under_the_data_directory_readable_by_its_owner_only(tmp_path) -> None:
    first = from_settings(None, external_redis=False, data_dir=str(tmp_path))
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = from_settings(None, external_redis=False, data_dir=str(tmp_path))
    assert again.open(first.seal("credential")) == "credential"  # the same key on every start


def test_rotation_writes_with_the_first_key_and_reads_with_any() -> None:
    from cryptography.fernet import Fernet

    new = Fernet.generate_key().decode()
    old_token = Cipher([TEST_SECRET_KEY]).seal("old")
    both = Cipher([new, TEST_SECRET_KEY])
    assert both.open(old_token) == "old"
    assert Cipher([new]).open(both.seal("new")) == "new"
    with pytest.raises(CipherError):
        Cipher([TEST_SECRET_KEY]).open(both.seal("new"))


def test_an_external_redis_without_a_key_or_with_a_bad_one_stops_the_start(tmp_path) -> None:
    with pytest.raises(SettingsError, match="STATUS_SECRET_KEY: required with REDIS_URL"):
        create_app(Settings(redis_url="redis://127.0.0.1:1/0", data_dir=str(tmp_path)))
    with pytest.raises(SettingsError, match="STATUS_SECRET_KEY: each comma-separated key must be a Fernet key"):
        create_app(Settings(redis_url="redis://127.0.0.1:1/0", secret_keys="not-a-key", data_dir=str(tmp_path)))
    config = tmp_path / "status.yaml"
    config.write_text("tenants: []\n")
    env = {"PATH": os.environ["PATH"], "REDIS_URL": "redis://127.0.0.1:1/0", "STATUS_CONFIG": str(config)}
    done = subprocess.run([sys.executable, "-m", "status_service.prober"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "STATUS_SECRET_KEY: required with REDIS_URL" in done.stderr and "Traceback" not in done.stderr
