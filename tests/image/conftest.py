"""Fixtures for image tests: a TLS + htpasswd registry per module (the plain HTTP one,
`plain`, is tests/conftest.py's: the build tests use it too), stores
with their own temp roots, and a check that nothing is left mounted or running."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.image.builtin import ensure_busybox
from cove.image.store import Store
from tests.lib.images import PASSWORD, USER, RegistryServer, overlay_mounts


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (scripts/install-deps.sh)")


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    for t in ("docker-registry", "htpasswd", "openssl"):
        _need(t)
    r = RegistryServer(tmp_path_factory.mktemp("reg-tls"), tls=True, user=USER,
                       password=PASSWORD).start()
    yield r
    r.stop()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[dict[str, Store]]:
    """`src` and `dst` stores under the test's temp dir; no mounts may outlive the test."""
    made: dict[str, Store] = {}

    class _Stores(dict[str, Store]):
        def __missing__(self, k: str) -> Store:
            made[k] = self[k] = Store(str(tmp_path / f"store-{k}"))
            return made[k]
    yield _Stores()
    assert overlay_mounts(tmp_path) == [], "overlay mounts left behind"


@pytest.fixture(scope="session")
def busybox_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store holding the built-in busybox image, built once per session."""
    st = Store(str(tmp_path_factory.mktemp("busybox-store")))
    ensure_busybox(st)
    return st
