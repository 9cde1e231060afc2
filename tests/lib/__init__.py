"""What the tests share that is not a fixture: runners, drivers, host inspection, one
`wait_for`. Fixtures stay in conftest files (those used by more than one directory in
tests/conftest.py); a conftest may import from here, a test never imports from a
conftest, nor from another test module: what two test files share lives here
(tests/unit/test_test_layout.py checks).

- paths: the repository, the cove-runtime launcher.
- wait: `wait_for`, the one poll-until-true-or-time-out.
- host: what a test may leave on the host (mounts, processes, cgroups) and how to remove it.
- bundles, runtime: OCI bundles from a base config; a runtime driver with its own state
  root; a test's world (`Env`); a --console-socket receiver.
- terminal: a command on a real pty (`PtySession`), or the master side of one (`PtyMaster`).
- engine: the `cove` CLI runner over a state root; the engine's processes.
- peers: a daemon under a temp dir with its cleanup checks (`Peer`), containerd's config;
  images as docker-archive tars.
- api: a `cove serve` driven by the docker clients.
- images: layer tars in memory, a registry server, `cove` over a store root.
- daemons: podman, dockerd, containerd as the tests run them (on `peers.Peer`).
- rootless: a user made for one test, and its `cove`.
- build: the `cove` runner of the build tests, with image inspection and the tree an
  image's layers make.
- hostgcc: an image with Debian's gcc from the host's own packages.
- debian: the cached Debian bookworm rootfs (plain, and with systemd) and its image.
- services: compose projects, the web images, a looping client.
- plans: reconcile passes on made-up replicas that record what they would do.
- cri: containerd with its CRI plugin in a private network namespace.
- kubelet, cristream, cripods: the kubelet-like CRI driver, the streaming server's
  websocket client, a script run to its end in a pod.
- handlers: the vm and gvisor handlers' runtimes, no qemu or runsc left behind.
- refruntimes: runc and crun, the reference runtimes of the differential tests.
- criu: whether CRIU can checkpoint here.
- guest: the pytest summary of the tests run in the qemu VM.
- security: bundles with the attack probe; runc to compare with.
"""
