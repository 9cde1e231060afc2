"""The peer tests' fixtures: podman, containerd (ctr) and dockerd driving cove-runtime,
one per module, defined in their test modules on tests/lib/peers.py's `Peer`; the busybox
image they load (`image_tar`, shared with tests/handlers) is tests/conftest.py's.

Each daemon runs with its own root, state and socket under a temp dir (prefix "peer"),
is stopped by PID at the end of its module, and everything it leaves on the host
(mounts, processes, cgroups, /etc/docker/key.json, /opt/containerd, ...) is removed
and then checked for. Each test also checks, after it ran, that it left no mount, no
process and no container cgroup behind (`Peer.check_clean`).
"""
