"""`cove migrate NAME --to HOST[:PORT] --token T` and `cove migrate-receive`: live
migration of a running container to another Cove host, by iterative pre-copy.

Source, once the target accepted the token:

1. pre-dump rounds (`cove-runtime checkpoint --pre-dump`, CRIU's memory tracking):
   round 1 writes all the memory, round k only what was dirtied since round k-1 (its
   `--parent-path`); each round's images go to the target while the container runs
   on. Rounds stop when one is under `threshold` bytes, stops shrinking, or at
   `rounds` (0: a stop-and-copy migration);
2. the final dump (`cove checkpoint`, parent: the last round) freezes the container
   and writes what is left; its archive (record, config, images, rootfs changes:
   cove/engine/checkpoint_archive.py) goes to the target, which imports it, restores
   it (its old IP and MAC back where its network is there too: checkpoint_net.py) and
   answers "running";
3. only then the source container is removed.

Downtime is the final dump's freeze to the target's "running" (measured here, so it
includes one round trip). A failure before the final dump leaves the source running
as it was (a pre-dump does not stop it); a failure after it (the target gone, its
restore failed) restores the source here from its own checkpoint, so it runs again,
with its connections. The target removes whatever it made for a migration that did
not complete (the staged images, the imported container).

Target: `receive` listens on ADDR:PORT, refuses a connection with a wrong token
(and waits for the next), and handles one migration. The wire: migrate_wire.py.
"""

from __future__ import annotations

import hmac
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from typing import Any

from cove.engine import checkpoint, events, migrate_wire, state
from cove.errors import CoveError

PORT = 7077
PRE = "migrate.pre"  # the pre-dump rounds' images, in the container's directory
FORMAT = 1


def _pages(d: str) -> int:
    """Bytes of memory pages in one image directory (the round's dirty set)."""
    return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)
               if n.startswith("pages-") and n.endswith(".img"))


def migrate(root: str, ref: str, to: str, token: str, *, rounds: int = 4,
            threshold: int = 4 << 20, tcp_established: bool = False) -> dict[str, Any]:
    """Move running container `ref` to the `cove migrate-receive` at `to`; the numbers
    (rounds' sizes, downtime, total seconds)."""
    from cove.engine import containers

    t0 = time.monotonic()
    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    status = containers.refresh_record(paths, name)["State"]["Status"]
    if status != "running":
        raise CoveError(f"container {name}", f"is {status}: only a running container can "
                        "be migrated")
    host, port = migrate_wire.parse_addr(to, PORT, "--to")
    try:
        sock = socket.create_connection((host, port), timeout=30)
    except OSError as e:
        raise CoveError(f"--to {to}", f"cannot connect ({e.strerror or e})") from None
    conn = migrate_wire.Conn(sock, f"target {to}")
    pre = os.path.join(paths.cdir(name), PRE)
    try:
        conn.send_json(b"H", {"token": token, "name": name, "format": FORMAT,
                              "tcp_established": tcp_established})
        conn.answer()
        shutil.rmtree(pre, ignore_errors=True)
        sizes = _precopy(paths, name, conn, pre, rounds, threshold)
        out = _final(paths, name, conn, len(sizes), tcp_established)
    finally:
        conn.close()
        shutil.rmtree(pre, ignore_errors=True)
    out.update(rounds=sizes, total_s=round(time.monotonic() - t0, 3), name=name, to=to)
    containers.remove(root, name, force=True)
    return out


def _precopy(paths: state.Paths, name: str, conn: migrate_wire.Conn, pre: str, rounds: int,
             threshold: int) -> list[int]:
    """The pre-dump rounds, each sent as it is written; their dirty-set sizes."""
    from cove.engine import containers

    sizes: list[int] = []
    cdir = paths.cdir(name)
    for k in range(1, rounds + 1):
        img = os.path.join(pre, str(k))
        os.makedirs(pre, 0o700, exist_ok=True)
        argv = [*containers.runtime(paths), "checkpoint", "--pre-dump", "--image-path", img,
                "--work-path", os.path.join(cdir, "criu.work"),
                *(["--parent-path", f"../{k - 1}"] if k > 1 else []), name]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise CoveError(f"migrate {name}: pre-dump", checkpoint._runtime_error(r.stderr))
        sizes.append(_pages(img))
        _send_dir(conn, img, f"{PRE}/{k}", {"kind": "pre", "round": k})
        conn.answer()
        if sizes[-1] < threshold or (k > 1 and sizes[-1] >= sizes[-2] * 0.9):
            break
    return sizes


def _send_dir(conn: migrate_wire.Conn, d: str, arcname: str, meta: dict[str, Any]) -> None:
    out = migrate_wire.Sender(conn)
    with tarfile.open(fileobj=out, mode="w|") as tar:  # type: ignore[call-overload]
        tar.add(d, arcname)
    out.end(meta)


def _final(paths: state.Paths, name: str, conn: migrate_wire.Conn, n_pre: int,
           tcp_established: bool) -> dict[str, Any]:
    """The final dump, its archive sent, the target's answer. A failure after the dump
    brings the source back here."""
    from cove.engine import checkpoint_archive

    t_freeze = time.monotonic()
    checkpoint.checkpoint(paths.root, name, tcp_established=tcp_established,
                 parent=f"../{PRE}/{n_pre}" if n_pre else "")
    t_dumped = time.monotonic()
    try:
        out = migrate_wire.Sender(conn)
        with tarfile.open(fileobj=out, mode="w|") as tar:  # type: ignore[call-overload]
            checkpoint_archive.write_into(tar, paths, name)
        sent = out.sent
        out.end({"kind": "final"})
        t_sent = time.monotonic()
        got = conn.answer()
    except BaseException as e:
        why = str(e) if isinstance(e, CoveError) else type(e).__name__
        try:
            checkpoint.restore(paths.root, name, tcp_established=tcp_established)
        except CoveError as e2:
            raise CoveError(f"migrate {name}", f"{why}; restoring it here failed too: "
                            f"{e2}") from None
        raise CoveError(f"migrate {name}", f"{why} (it runs here again)") from None
    t_run = time.monotonic()
    return {"downtime_s": round(t_run - t_freeze, 3), "dump_s": round(t_dumped - t_freeze, 3),
            "send_s": round(t_sent - t_dumped, 3), "final_bytes": sent,
            "target_restore_s": got.get("restore_s")}


# -- the receiving side -------------------------------------------------------------------

def receive(root: str, listen: str, token: str,
            ready: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Listen on `listen` (ADDR:PORT, port 0: any), take one migration with `token`;
    its numbers. `ready(addr)` is called once listening."""
    if not token:
        raise CoveError("--token", "a token is needed (the source must give the same)")
    host, port = migrate_wire.parse_addr(listen, PORT, "--listen")
    paths = state.Paths(root)
    srv = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                               else socket.AF_INET, reuse_port=False)
    try:
        if ready is not None:
            a = srv.getsockname()
            ready(f"{a[0]}:{a[1]}")
        while True:
            sock, addr = srv.accept()
            conn = migrate_wire.Conn(sock, f"source {addr[0]}")
            try:
                hello = _hello(paths, conn, token)
                if hello is None:
                    continue
                return _take(paths, conn, hello)
            finally:
                conn.close()
    finally:
        srv.close()


def _hello(paths: state.Paths, conn: migrate_wire.Conn, token: str) -> dict[str, Any] | None:
    """The source's hello, checked; None (it was told why) for a wrong token."""
    from cove.engine import containers

    kind, data = conn.recv()
    try:
        hello = json.loads(data) if kind == b"H" else None
    except ValueError:
        hello = None
    if not isinstance(hello, dict):
        conn.send(b"X", b"not a cove migrate hello")
        return None
    if not hmac.compare_digest(str(hello.get("token", "")).encode(), token.encode()):
        conn.send(b"X", b"bad token")
        return None
    if hello.get("format") != FORMAT:
        conn.send(b"X", f"migration format {hello.get('format')}: expected {FORMAT}".encode())
        return None
    name = str(hello.get("name", ""))
    try:
        containers.check_name(name)
        if os.path.lexists(paths.cdir(name)):
            raise CoveError(f"container name {name!r}", "already in use on the target")
    except CoveError as e:
        conn.send(b"X", str(e).encode())
        return None
    conn.send_json(b"O", {})
    return hello


def _take(paths: state.Paths, conn: migrate_wire.Conn, hello: dict[str, Any]) -> dict[str, Any]:
    """Receive the rounds and the final archive, import and restore; on any failure
    the source is told and nothing made here is left."""
    from cove.engine import checkpoint_archive

    name = str(hello["name"])
    stage = tempfile.mkdtemp(prefix=f".migrate-{name}-", dir=paths.root)
    made = False
    try:
        if os.path.lexists(paths.cdir(name)):
            raise CoveError(f"container name {name!r}", "already in use here")
        t_first = time.monotonic()
        received = 0
        while True:
            part = os.path.join(stage, "part.tar")
            meta, n = migrate_wire.receive_stream(conn, part)
            received += n
            if meta.get("kind") != "pre":
                break
            with tarfile.open(part) as tar:
                checkpoint_archive._extract(tar, PRE, os.path.join(stage, PRE))
            os.unlink(part)  # its room, before the next round comes
            conn.send_json(b"O", {"round": meta.get("round")})
        t0 = time.monotonic()
        checkpoint_archive.unpack(paths, part, name)
        made = True
        if os.path.isdir(os.path.join(stage, PRE)):
            os.replace(os.path.join(stage, PRE), os.path.join(paths.cdir(name), PRE))
        rec = checkpoint.restore(paths.root, name,
                        tcp_established=bool(hello.get("tcp_established")))
        made = False  # checkpoint.restore discards only what it made: from here it is ours
        took = round(time.monotonic() - t0, 3)
        conn.send_json(b"R", {"restore_s": took})
        shutil.rmtree(os.path.join(paths.cdir(name), PRE), ignore_errors=True)
        events.emit(paths.root, "container", "migrate-in", rec)
        return {"name": name, "restore_s": took, "bytes": received,
                "transfer_s": round(t0 - t_first, 3)}
    except BaseException as e:
        if made:
            checkpoint_archive.discard(paths, name)
        if not isinstance(e, migrate_wire.PeerError):
            try:
                conn.send(b"X", str(e).encode() if isinstance(e, CoveError)
                          else type(e).__name__.encode())
            except CoveError:
                pass
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
