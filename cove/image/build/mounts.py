"""BuildKit's `RUN --mount=type=secret,...`: a file given to the build with
`--secret id=X,src=F` (or `env=VAR`) that one RUN reads and no image keeps.

As BuildKit and buildah give it: the file at `target` (`/run/secrets/<id>` by
default) is a read-only bind mount of a copy owned by `uid`:`gid` (0:0) with `mode`
(0400); `required=true` makes a missing secret an error, else the step runs without
it. The copy lives in the step's container directory, never in the overlay, and the
mount point the runtime had to make (the file and any directory above it that the
image lacked) is left out of the step's layer when nothing else was put there. The
secret's contents are in no cache key and no history entry: a changed secret does not
rebuild a cached step, as with BuildKit.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from cove.errors import CoveError
from cove.image.build.fs import in_root


@dataclass
class SecretMount:
    id: str
    target: str
    required: bool
    mode: int
    uid: int
    gid: int

    def key(self) -> list[str]:
        """What goes into the step's cache key: where and how, never the contents."""
        return [self.id, self.target, oct(self.mode), str(self.uid), str(self.gid)]


def parse_secret_flag(value: str) -> tuple[str, str]:
    """`--secret id=X,src=F` (also `source=`, `type=file`, or `env=VAR`, whose value
    becomes the secret): (id, the file's path or `env:VAR`)."""
    fields: dict[str, str] = {}
    for part in value.split(","):
        k, eq, v = part.partition("=")
        if not eq:
            raise CoveError(f"--secret {value}", f"{part!r} is not KEY=VALUE")
        fields[k.strip().lower()] = v
    kind = fields.pop("type", "file")
    sid = fields.pop("id", "")
    src = fields.pop("src", None) or fields.pop("source", None)
    env = fields.pop("env", None)
    if fields:
        raise CoveError(f"--secret {value}", f"unknown key {sorted(fields)[0]!r}")
    if kind not in ("file", "env"):
        raise CoveError(f"--secret {value}", f"type {kind!r}: expected file or env")
    if env is not None or kind == "env":
        name = env or sid or (src or "")
        if not name:
            raise CoveError(f"--secret {value}", "needs env=VAR")
        if name not in os.environ:
            raise CoveError(f"--secret {value}", f"${name} is not set")
        return sid or name, f"env:{name}"
    if not src:
        if not sid:
            raise CoveError(f"--secret {value}", "needs id=X,src=FILE")
        src = sid
    if not sid:
        sid = os.path.basename(src)
    if not os.path.isfile(src):
        raise CoveError(f"--secret {value}", f"{src}: no such file")
    return sid, os.path.abspath(src)


def parse_mount(spec: str) -> SecretMount:
    """One `--mount=` of a RUN: only type=secret is known (cache, bind, tmpfs and ssh
    mounts are refused by name rather than ignored)."""
    fields: dict[str, str] = {}
    for part in spec.split(","):
        k, eq, v = part.partition("=")
        fields[k.strip().lower()] = v if eq else "true"
    kind = fields.pop("type", "bind")
    if kind != "secret":
        raise CoveError(f"RUN --mount={spec}", f"type={kind} is not supported (only "
                                               "type=secret)")
    sid = fields.pop("id", "")
    target = fields.pop("target", None) or fields.pop("dst", None) or \
        fields.pop("destination", None)
    if not sid and not target:
        raise CoveError(f"RUN --mount={spec}", "a secret needs id= or target=")
    sid = sid or posixpath.basename(target or "")
    target = target or f"/run/secrets/{sid}"
    if not target.startswith("/"):
        raise CoveError(f"RUN --mount={spec}", "target must be an absolute path")
    required = fields.pop("required", "false").lower() in ("true", "1", "")
    try:
        mode = int(fields.pop("mode", "0400"), 8)
        uid = int(fields.pop("uid", "0"))
        gid = int(fields.pop("gid", "0"))
    except ValueError as e:
        raise CoveError(f"RUN --mount={spec}", f"not a number: {e}") from None
    if fields:
        raise CoveError(f"RUN --mount={spec}", f"unknown option {sorted(fields)[0]!r}")
    return SecretMount(sid, posixpath.normpath(target), required, mode, uid, gid)


def _contents(src: str) -> bytes:
    if src.startswith("env:"):
        return os.environ.get(src[4:], "").encode()
    with open(src, "rb") as f:
        return f.read()


def prepare(mounts: list[SecretMount], secrets: dict[str, str], cdir: str, rootfs: str
            ) -> tuple[list[dict[str, object]], set[str], dict[str, tuple[int, int, int]]]:
    """The OCI mounts for a step's secrets (copies under `cdir/secrets`), the paths
    (relative to the rootfs) that the runtime will create to mount over, and the
    directories above them that the image has (overlayfs copies them up when a mount
    point is made in them): their (mode, uid, gid), to know them unchanged."""
    out: list[dict[str, object]] = []
    made: set[str] = set()
    above: dict[str, tuple[int, int, int]] = {}
    if not mounts:
        return out, made, above
    sdir = os.path.join(cdir, "secrets")
    os.makedirs(sdir, 0o700, exist_ok=True)
    for i, sm in enumerate(mounts):
        if sm.id not in secrets:
            if sm.required:
                raise CoveError(f"RUN --mount=type=secret,id={sm.id}",
                                "secret not given (cove build --secret id=X,src=FILE)")
            continue
        copy = os.path.join(sdir, str(i))
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_contents(secrets[sm.id]))
            os.fchown(f.fileno(), sm.uid, sm.gid)
            os.fchmod(f.fileno(), sm.mode)
        out.append({"destination": sm.target, "type": "bind", "source": copy,
                    "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
        rel = sm.target.lstrip("/")
        while rel and not os.path.lexists(in_root(rootfs, rel, follow_last=False)):
            made.add(rel)
            rel = posixpath.dirname(rel)
        while rel:
            st = os.lstat(in_root(rootfs, rel, follow_last=False))
            above[rel] = (st.st_mode, st.st_uid, st.st_gid)
            rel = posixpath.dirname(rel)
    return out, made, above
