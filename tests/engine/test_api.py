"""The Python API over the same engine: `cove.run` (cove's shortcut, which returns the
Container) and the module-level collections of the default client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lib.engine import Cove


@pytest.fixture
def default_root(cove: Cove) -> Iterator[str]:
    """The API's default root: this test's (and back to none after)."""
    import cove as api
    api.set_root(cove.root)
    yield cove.root
    api.set_root(None)


def test_api_run_and_list(default_root: str, cove: Cove) -> None:
    import cove as api
    c = api.run("busybox", "echo hi", root=cove.root)        # a string: words, as a shell
    assert (c.status, c.exit_code, c.logs()) == ("exited", 0, b"hi\n")
    d = api.run("busybox", ["sleep", "30"], detach=True, name="bg")
    assert d.attrs["HostConfig"]["NetworkMode"] == "none"     # cove.run's default
    assert [x.name for x in api.containers.list()] == ["bg"]
    assert api.containers.get("bg").status == "running"
    d.stop(timeout=1)
    assert d.exit_code == 137
    assert {x.name for x in api.containers.list(all=True)} == {c.name, "bg"}
    c.remove()
    d.remove()
    v = api.volumes.create("v")
    assert isinstance(v, api.Volume)
    assert [x.name for x in api.volumes.list()] == ["v"]
    v.remove()
    assert api.volumes.list() == []
    assert api.images.get("busybox").tags == ["localhost/busybox:latest"]


def test_api_run_remove_keeps_the_answer(default_root: str) -> None:
    import cove as api
    c = api.run("busybox", "sh -c 'echo out; echo err >&2; exit 3'",
                environment={"A": "1"}, rm=True)
    assert (c.status, c.exit_code, c.logs(), c.logs(stderr=False)) == (
        "exited", 3, b"out\nerr\n", b"out\n")
    assert api.containers.list(all=True) == []
    with pytest.raises(api.NotFound):
        c.reload()
    # docker-py's keywords too, and the same refusals
    c = api.run("busybox", ["sh", "-c", "echo $A"], environment={"A": "x"}, remove=True)
    assert c.logs() == b"x\n"
    with pytest.raises(TypeError, match="stdout"):
        api.run("busybox", "true", stdout=False)
    with pytest.raises(TypeError, match="'nope'"):
        api.run("busybox", "true", nope=1)
    assert api.containers.list(all=True) == []
