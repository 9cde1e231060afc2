#!/bin/sh
# System packages Cove's runtime and its tests need (Debian 12). Idempotent: apt runs
# only when something is missing, so `make test` stays fast on a prepared machine.
set -eu
PKGS="python3 python3-venv busybox-static libseccomp2 uidmap tmux iproute2 procps psmisc
runc crun podman conmon containerd docker.io iptables fuse-overlayfs slirp4netns
docker-registry apache2-utils openssl nftables linux-image-amd64 qemu-system-x86 runsc
skopeo umoci debootstrap erofs-utils tini buildah containernetworking-plugins
docker-compose criu gcc libc6-dev strace"
# `install-deps.sh bench` (make bench-deps): the workloads of bench/overhead, only for it.
BENCH_PKGS="sysbench fio iperf3"
[ "${1:-}" = bench ] && PKGS="$BENCH_PKGS"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing (run as root, or apt-get install them)" >&2
    exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
