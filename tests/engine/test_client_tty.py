"""The Python API's terminals (docker-py's `tty=True`): the container runs under the
monitor like `cove run -t`'s; detached, its logs() are its terminal's output (raw,
`\\r\\n`, as docker logs a tty); not detached, run returns that output, as docker-py's."""

from __future__ import annotations

from typing import Any

import pytest

from tests.lib.engine import Cove
from tests.lib.wait import wait_for


@pytest.fixture
def client(cove: Cove) -> Any:
    import cove as api
    return api.Client(root=cove.root)


def test_run_tty_returns_the_terminal_output(client: Any) -> None:
    import cove as api
    out = client.containers.run("busybox", "sh -c 'echo hi; tty; [ -t 1 ]'",
                                tty=True, network="none", remove=True)
    assert out.startswith(b"hi\r\n/dev/pts/"), out
    assert client.containers.list(all=True) == []
    with pytest.raises(api.ContainerError) as e:
        client.containers.run("busybox", "sh -c 'echo no; exit 3'", tty=True,
                              network="none", remove=True)
    assert e.value.exit_status == 3
    c = api.run("busybox", "sh -c 'echo top'", tty=True, root=client.root)
    assert c.exit_code == 0 and c.logs() == b"top\r\n"
    assert c.attrs["Config"]["Tty"] is True
    c.remove()


def test_detached_tty_container(client: Any) -> None:
    c = client.containers.run("busybox", "sh -c 'echo started; exec sleep 30'",
                              tty=True, detach=True, network="none", name="t")
    assert c.status == "running"
    wait_for(lambda: c.logs() == b"started\r\n", what="the terminal's output in the log")
    c.stop(timeout=1)
    c.remove()
    # docker-py's keep-alive: a shell on its terminal, stdin open; it runs until stopped
    c = client.containers.run("busybox", "sh", tty=True, stdin_open=True, detach=True,
                              network="none", name="sh")
    c.reload()
    assert c.status == "running" and c.attrs["Config"]["OpenStdin"] is True
    assert c.exec_run("echo ok") == (0, b"ok\n")
    c.remove(force=True)
    assert client.containers.list(all=True) == []
