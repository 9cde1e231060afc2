"""The CRI tests' fixtures: containerd 1.6 with its CRI plugin, private to the test
session (`node`: tests/lib/cri.py's CriNode, which says how it is set up and checked),
driven as kubelet does (`kubelet`); after every test the pods it left are removed and
the node is checked for leftovers, at the end containerd is stopped and its network
namespace deleted."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lib.cri import CriNode, make_images, sweep_stale
from tests.lib.peers import need

try:  # the dev extra's CRI stubs (pyproject.toml); without them, nothing to collect here
    from tests.lib.kubelet import Kubelet
except ImportError:  # pragma: no cover - an environment made before they were added
    collect_ignore_glob = ["test_*.py"]
    Kubelet = Any  # type: ignore[misc,assignment]


@pytest.fixture(scope="session")
def node() -> Iterator[CriNode]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for b in ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "nsenter"):
        need(b)
    need("/usr/lib/cni/bridge")
    for gone in sweep_stale():  # a killed session's leftovers, on a developer's machine
        print(f"removed a stale leftover: {gone}")
    d = tempfile.mkdtemp(prefix="cri-images-")
    try:
        images = make_images(d)
        n = CriNode()
        try:
            n.boot(images)
            yield n
        finally:
            n.teardown()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def kubelet(node: CriNode) -> Iterator[Kubelet]:
    """The node's driver; after the test, its pods are removed (as kubelet's garbage
    collection would) and the node is checked for leftovers."""
    k = node.kubelet
    assert k is not None
    yield k
    errs = k.remove_all()
    left = k.take_leftovers()
    node.check_node_clean()
    assert not errs, errs
    assert not left, f"the runtime left cgroups in removed pods: {left}"
