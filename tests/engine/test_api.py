"""The Python API over the same engine."""

from __future__ import annotations

from tests.engine.conftest import Cove


def test_api_run_and_list(cove: Cove) -> None:
    import cove as api
    c = api.run("busybox", ["echo", "hi"], root=cove.root)
    assert (c.status, c.exit_code, c.logs()) == ("exited", 0, "hi\n")
    d = api.run("busybox", ["sleep", "30"], detach=True, name="bg", root=cove.root)
    assert [x.name for x in api.containers.list(root=cove.root)] == ["bg"]
    assert api.containers.get("bg", root=cove.root).status == "running"
    d.stop(timeout=1)
    assert d.exit_code == 137
    assert {x.name for x in api.containers.list(all=True, root=cove.root)} == {c.name, "bg"}
    c.remove()
    d.remove()
    api.volumes.create("v", root=cove.root)
    assert [v["Name"] for v in api.volumes.list(root=cove.root)] == ["v"]
    api.volumes.remove("v", root=cove.root)
    assert cove is not None and api.run is not None
