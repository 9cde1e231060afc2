"""A built image leaves Cove: pushed to a local `docker-registry`, pulled and run by
podman and by docker 20.10 (private roots, cove-runtime as their runtime; the
fixtures of tests/image/test_interop.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lib.build import Cove, write
from tests.lib.daemons import Docker, Podman, docker_run
from tests.lib.images import RegistryServer

pytestmark = pytest.mark.peers


def test_push_then_podman_and_docker_run(cove: Cove, tmp_path: Path,
                                         plain: RegistryServer,
                                         podman: Podman, docker: Docker
                                         ) -> None:
    ref = f"{plain.host}/build/app:1"
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY hello.sh /srv/\n"
                                                 "RUN chmod 755 /srv/hello.sh\n"
                                                 'ENTRYPOINT ["/srv/hello.sh"]\n'
                                                 'CMD ["default"]\n',
                                   "hello.sh": "#!/bin/sh\necho \"built and run: $1\"\n"})
    cove("build", "-t", ref, str(ctx))
    digest = cove("push", "-q", ref).stdout.strip()
    assert digest == cove.store().resolve(ref)
    assert cove("run", "--rm", "--network", "none", ref).stdout == "built and run: default\n"
    podman("pull", "-q", ref, timeout=120)
    assert podman("run", "--rm", ref, "podman").stdout == "built and run: podman\n"
    podman("rmi", ref)
    podman.check_clean()
    docker("pull", "-q", ref, timeout=120)
    assert docker_run(docker, ref, "docker") == "built and run: docker\n"
    docker("rmi", ref)
    docker.check_clean()
