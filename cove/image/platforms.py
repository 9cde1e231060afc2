"""The host's OCI platform (os/architecture/variant), GOARCH-style."""

from __future__ import annotations

import platform

from cove.oci.image import Platform

_ARCH = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}


def host_platform() -> Platform:
    m = platform.machine()
    arch, variant = _ARCH.get(m, (m, ""))
    return Platform("linux", arch, variant)
