"""The D-Bus wire format of cove.sys.dbus and the resource-to-property mapping of
cove.runtime.cgroups.sdprops, without a bus: bytes checked against a message that
systemctl (sd-bus) sent, captured with strace, and runc's conversions."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.runtime.cgroups import sdprops
from cove.runtime.cgroups.systemd import expand_slice, init_prefix, open_manager, parse_path
from cove.sys import dbus

# `systemctl show init.scope -p Id` (systemd 252): Properties.GetAll("") on the unit.
SD_BUS_GETALL = bytes.fromhex(
    "6c01040105000000010000009f00000001016f002b0000002f6f72672f667265656465736b746f702f"
    "73797374656d64312f756e69742f696e69745f326573636f706500000000000301730006000000476574"
    "416c6c0000020173001f0000006f72672e667265656465736b746f702e444275732e50726f7065727469"
    "65730006017300180000006f72672e667265656465736b746f702e73797374656d643100000000000000"
    "0008016700017300000000000000")


def test_encode_matches_sd_bus() -> None:
    fields = {dbus.PATH: ("o", "/org/freedesktop/systemd1/unit/init_2escope"),
              dbus.MEMBER: ("s", "GetAll"),
              dbus.INTERFACE: ("s", "org.freedesktop.DBus.Properties"),
              dbus.DESTINATION: ("s", "org.freedesktop.systemd1")}
    mine = dbus.encode(dbus.METHOD_CALL, 1, fields, "s", [""], flags=4)
    # the same bytes but for the order of the header fields (sd-bus: path, member, ...)
    got = dbus.decode(mine)
    want = dbus.decode(SD_BUS_GETALL)
    assert got is not None and want is not None
    assert got[0].fields == want[0].fields and got[0].body == want[0].body == [""]
    assert len(mine) == len(SD_BUS_GETALL) == got[1]


def test_round_trip_of_start_transient_unit() -> None:
    props = [*sdprops.unit_properties("d", "system.slice", 42, False),
             ("AllowedCPUs", ("ay", b"\x03")), ("CPUWeight", ("t", 100))]
    args = ["x.scope", "replace", props, [("aux.scope", [("Description", ("s", "a"))])]]
    raw = dbus.encode(dbus.METHOD_CALL, 9, {dbus.MEMBER: ("s", "StartTransientUnit")},
                      "ssa(sv)a(sa(sv))", args)
    got = dbus.decode(raw)
    assert got is not None and got[1] == len(raw)
    assert got[0].body == args and got[0].serial == 9
    assert dbus.decode(raw[:-1]) is None  # short: wait for more
    assert dbus.split("ssa(sv)a(sa(sv))") == ["s", "s", "a(sv)", "a(sa(sv))"]


def test_big_endian_reply_reads() -> None:
    body = b"\x00\x00\x00\x05hello\x00"
    head = b"B\x02\x00\x01" + len(body).to_bytes(4, "big") + (3).to_bytes(4, "big")
    fields = (b"\x05\x01u\x00" + (7).to_bytes(4, "big") + b"\x08\x01g\x00\x01s\x00")
    msg = head + len(fields).to_bytes(4, "big") + fields
    msg += b"\0" * (-len(msg) % 8) + body
    got = dbus.decode(msg)
    assert got is not None
    assert got[0].fields[dbus.REPLY_SERIAL] == 7 and got[0].body == ["hello"]


def test_properties_as_runc_maps_them() -> None:
    r = {"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20},
         "cpu": {"shares": 1024, "quota": 15000, "period": 100000, "cpus": "0-2,9"},
         "pids": {"limit": -1}, "blockIO": {"weight": 500}}
    v1 = dict(sdprops.properties(r, False))
    assert v1["MemoryLimit"] == ("t", 64 << 20) and v1["CPUShares"] == ("t", 1024)
    assert v1["CPUQuotaPerSecUSec"] == ("t", 150000)  # 15 ms / 100 ms: 150 ms a second
    assert v1["CPUQuotaPeriodUSec"] == ("t", 100000)
    assert v1["AllowedCPUs"] == ("ay", b"\x07\x02") and v1["BlockIOWeight"] == ("t", 500)
    assert v1["TasksMax"] == ("t", (1 << 64) - 1) and "MemoryMax" not in v1
    v2 = dict(sdprops.properties(r, True))
    assert v2["MemoryMax"] == ("t", 64 << 20) and v2["MemoryLow"] == ("t", 32 << 20)
    assert v2["MemorySwapMax"] == ("t", 32 << 20) and v2["CPUWeight"] == ("t", 39)
    assert "BlockIOWeight" not in v2 and "CPUShares" not in v2
    # a quota that is no whole percentage rounds up to the next 10 ms a second
    assert dict(sdprops.cpu_quota(12345, 100000))["CPUQuotaPerSecUSec"] == ("t", 130000)
    assert dict(sdprops.cpu_quota(None, None)) == {}
    uni = dict(sdprops.properties({"unified": {"memory.high": "max", "cpu.max": "50000 "
                                               "100000", "pids.max": "9"}}, True))
    assert uni == {"MemoryHigh": ("t", (1 << 64) - 1), "CPUQuotaPeriodUSec": ("t", 100000),
                   "CPUQuotaPerSecUSec": ("t", 500000), "TasksMax": ("t", 9)}
    with pytest.raises(CoveError, match="invalid cpu list"):
        sdprops.properties({"cpu": {"cpus": "3-1"}}, False)
    with pytest.raises(CoveError, match="a swap limit needs a memory limit"):
        sdprops.properties({"memory": {"swap": 5}}, True)


def test_device_properties() -> None:
    deny_all = {"allow": False, "access": "rwm"}
    rules = [deny_all, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": True, "type": "c", "access": "m"},
             {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
             {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "access": "r"}]  # 1:* is "mem"
    props = sdprops.devices(rules, "d")
    assert props[:2] == [("DeviceAllow", ("a(ss)", [])), ("DevicePolicy", ("s", "strict"))]
    assert props[2] == ("DeviceAllow", ("a(ss)", [
        ("/dev/char/1:3", "rwm"), ("char-*", "m"), ("char-mem", "r")]))
    # allow all: systemd's "auto" with no list; a deny-list: deny-all (as runc)
    assert sdprops.devices([{"allow": True, "access": "rwm"}], "d")[0] == \
        ("DevicePolicy", ("s", "auto"))
    assert sdprops.devices([], "d")[0] == ("DevicePolicy", ("s", "auto"))
    deny_one = sdprops.devices([{"allow": False, "type": "c", "major": 1, "minor": 3}], "d")
    assert deny_one[1:] == [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", []))]


HYBRID = """\
30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""


def test_paths() -> None:
    assert parse_path("", "abc") == ("system.slice", "cove-abc.scope")
    assert parse_path(":pfx:abc", "x") == ("system.slice", "pfx-abc.scope")
    assert parse_path("a-b.slice::abc", "x") == ("a-b.slice", "abc.scope")
    for bad in ("/a/b", "a:b", "a:b:c:d", "s.slice:p:"):
        with pytest.raises(CoveError, match="expected slice:prefix:name for systemd"):
            parse_path(bad, "x")
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert init_prefix("1:name=systemd:/init.scope\n", "name=systemd") == ""
    assert init_prefix("0::/machine/x/init.scope\n", "") == "/machine/x"
    # hybrid with systemd in legacy mode (pid 1 not in the unified init.scope): no v2
    m = open_manager("machine.slice:cove:c1", "c1", mountinfo=HYBRID, v2_controllers=[],
                     proc1_cgroup="1:name=systemd:/init.scope\n4:memory:/init.scope\n0::/\n")
    assert m.dirs == ["/sys/fs/cgroup/systemd/machine.slice/cove-c1.scope",
                      "/sys/fs/cgroup/memory/machine.slice/cove-c1.scope"]
    assert (m.unit, m.slice, m.to_state()["systemd"]) == (
        "cove-c1.scope", "machine.slice", {"unit": "cove-c1.scope", "slice": "machine.slice"})
    m = open_manager("machine.slice:cove:c1", "c1", mountinfo=HYBRID, v2_controllers=[],
                     proc1_cgroup="1:name=systemd:/init.scope\n0::/init.scope\n")
    assert m.dirs[-1] == "/sys/fs/cgroup/unified/machine.slice/cove-c1.scope"


def test_auth_ok_and_a_signal_in_one_read(tmp_path: Path) -> None:
    """systemd's private socket sends its signals of the moment (a reload, units
    changing) to a connection as soon as BEGIN is read: the OK and the first signal may
    arrive in one read. The client once waited for a read ending the line and hung on
    the signal stream (a `delete --force` right after a daemon-reload); a fake peer
    here, for a race a real systemd shows only under a stream of reloads."""
    path = str(tmp_path / "sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    sig = dbus.encode(dbus.SIGNAL, 7, {dbus.PATH: ("o", "/org/freedesktop/systemd1"),
                                       dbus.INTERFACE: ("s", "x"),
                                       dbus.MEMBER: ("s", "Reloading")}, "b", [True])

    def peer() -> None:
        conn, _ = srv.accept()
        with conn:
            got = b""
            while b"BEGIN\r\n" not in got:
                got += conn.recv(256)
            conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n" + sig)
            call = dbus.decode(conn.recv(4096))
            assert call is not None
            conn.sendall(dbus.encode(dbus.METHOD_RETURN, 8,
                                     {dbus.REPLY_SERIAL: ("u", call[0].serial)}, "s", ["ok"]))
            conn.recv(1)  # until the client closes

    t = threading.Thread(target=peer, daemon=True)
    t.start()
    c = dbus.Connection(path, bus=False, timeout=5)
    try:
        assert c.call(None, "/", "x", "Ping") == ["ok"]
        assert c.signal("Reloading").body == [True]
    finally:
        c.close()
        t.join(5)
        srv.close()
