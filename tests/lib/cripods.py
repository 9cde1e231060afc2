"""What the CRI tests do in a pod beside the kubelet driver's calls: run a script in a
container to its end and read what it printed (tests/cri/test_security.py,
test_isolation_handlers.py)."""

from __future__ import annotations

from typing import Any

from tests.lib.cri import BUSYBOX_REF
from tests.lib.kubelet import EXITED, Kubelet, Pod


def status_field(text: str, name: str) -> str:
    """A field of /proc/PID/status as the container printed it ("CapEff", "NoNewPrivs")."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in {text}")


def run_to_end(kubelet: Kubelet, pod: Pod, name: str, script: str,
               **kw: Any) -> tuple[int, list[str]]:
    """`script` in a busybox container of the pod, run to its end: (exit code, stdout
    lines)."""
    cid = kubelet.run(pod, name, BUSYBOX_REF, ["sh", "-c", script], **kw)
    st = kubelet.wait_state(cid, EXITED)
    return st.exit_code, kubelet.stdout_of(pod, name)
