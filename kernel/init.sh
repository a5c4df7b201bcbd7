#!/bin/busybox sh
# PID 1 of the dmabuf-top lab guest.
#
# Builds a root out of the host's own filesystem (virtio-fs, read-only), puts
# fresh kernel filesystems and tmpfs where a read-only root would get in the
# way, runs one command in it and powers off. The command's output goes to a
# virtio-serial port of its own so that kernel console noise never mixes into
# it, and its exit status goes to a second port: the host reads both as files.
#
# /job/lab.env (written by the host for each run, appended to the initramfs)
# sets:
#   LAB_ROOT_TAG      virtio-fs tag of the host root
#   LAB_RESULTS_TAG   virtio-fs tag of the writable results share ("" = none)
#   LAB_RESULTS_PATH  host path of the results directory, mounted at the same path
#   LAB_SOURCE_TAG    virtio-fs tag of the project's directory ("" = none: the root is the host's own)
#   LAB_SOURCE_PATH   its host path, mounted read-only at the same path (a guest of another
#                     architecture boots on a root of its own and runs the host's checkout from here)
#   LAB_SCRATCH       "1" when an NVMe scratch disk is attached
#   LAB_HOME          home directory of the command
#   LAB_KEEP_PATH     the command's working directory when it lies under one of
#                     the tmpfs below (CI checkouts live in /tmp): kept visible
# /job/command.sh is the command itself: environment, cwd and an exec.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

NEWROOT=/newroot
SCRATCH_DEVICE=/dev/nvme0n1
SCRATCH_MOUNT=/mnt/scratch

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

. /job/lab.env

# The ports appear under /sys/class/virtio-ports with the name the host gave
# them; the /dev node is named after the port number, which we do not choose.
port_device() {
    for port in /sys/class/virtio-ports/*; do
        if [ "$(cat "$port/name" 2>/dev/null)" = "$1" ]; then
            echo "/dev/${port##*/}"
            return 0
        fi
    done
    return 1
}

wait_for() {
    # Devices on PCI are probed asynchronously: give them a few seconds.
    tries=0
    while ! "$@" >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -gt 100 ] && return 1
        usleep 50000
    done
}

wait_for port_device dmabuf-top.status
STATUS_PORT=$(port_device dmabuf-top.status)
wait_for port_device dmabuf-top.output
OUTPUT_PORT=$(port_device dmabuf-top.output)

report() {
    if [ -n "$STATUS_PORT" ]; then
        echo "$1" >"$STATUS_PORT"
    else
        echo "dmabuf-top-lab: $1" >/dev/console
    fi
}

fail() {
    echo "dmabuf-top-lab: $*" >/dev/console
    report "init-error=$*"
    sync
    poweroff -f
}

# Mount something that must be there for the command to make sense.
need_mount() {
    mount "$@" || fail "mount $* failed"
}

# Mount something nice to have (a kernel without tracefs still runs `true`).
try_mount() {
    mount "$@" 2>/dev/null
}

mkdir -p "$NEWROOT"
need_mount -t virtiofs -o ro "$LAB_ROOT_TAG" "$NEWROOT"

need_mount -t proc proc "$NEWROOT/proc"
need_mount -t sysfs sysfs "$NEWROOT/sys"
need_mount -t devtmpfs devtmpfs "$NEWROOT/dev"
mkdir -p "$NEWROOT/dev/pts" "$NEWROOT/dev/shm"
try_mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts "$NEWROOT/dev/pts"
try_mount -t tmpfs -o mode=1777 tmpfs "$NEWROOT/dev/shm"

# Hold on to the working directory before a tmpfs hides it; it goes back below.
KEPT=/kept
if [ -n "$LAB_KEEP_PATH" ]; then
    mkdir -p "$KEPT"
    need_mount --bind "$NEWROOT$LAB_KEEP_PATH" "$KEPT"
fi

# The host root is read-only: give every conventional scratch place a tmpfs.
need_mount -t tmpfs -o mode=1777 tmpfs "$NEWROOT/tmp"
need_mount -t tmpfs -o mode=755 tmpfs "$NEWROOT/run"
[ -d "$NEWROOT/var/tmp" ] && try_mount -t tmpfs -o mode=1777 tmpfs "$NEWROOT/var/tmp"
[ -d "$NEWROOT$LAB_HOME/.cache" ] && try_mount -t tmpfs -o mode=700 tmpfs "$NEWROOT$LAB_HOME/.cache"

if [ -n "$LAB_KEEP_PATH" ]; then
    mkdir -p "$NEWROOT$LAB_KEEP_PATH" || fail "cannot recreate $LAB_KEEP_PATH in the guest"
    need_mount --move "$KEPT" "$NEWROOT$LAB_KEEP_PATH"
fi

try_mount -t debugfs debugfs "$NEWROOT/sys/kernel/debug"
try_mount -t tracefs tracefs "$NEWROOT/sys/kernel/tracing"
try_mount -t bpf -o mode=700 bpf "$NEWROOT/sys/fs/bpf"
try_mount -t cgroup2 cgroup2 "$NEWROOT/sys/fs/cgroup"

if [ "$LAB_SCRATCH" = 1 ]; then
    # The host's /mnt is rarely meant for us: shadow it unless it already has a
    # mount point ready for the disk.
    if [ ! -d "$NEWROOT$SCRATCH_MOUNT" ]; then
        need_mount -t tmpfs -o mode=755 tmpfs "$NEWROOT/mnt"
        mkdir -p "$NEWROOT$SCRATCH_MOUNT"
    fi
    wait_for test -b "$SCRATCH_DEVICE" || fail "scratch disk $SCRATCH_DEVICE did not appear"
    need_mount -t ext4 "$SCRATCH_DEVICE" "$NEWROOT$SCRATCH_MOUNT"
    chmod 1777 "$NEWROOT$SCRATCH_MOUNT"
fi

# After every tmpfs above, so that none of them hides the shares; the project's first, so that a
# results directory inside it lands on top.
if [ -n "$LAB_SOURCE_TAG" ]; then
    [ -d "$NEWROOT$LAB_SOURCE_PATH" ] || mkdir -p "$NEWROOT$LAB_SOURCE_PATH" ||
        fail "project directory $LAB_SOURCE_PATH cannot be mounted in the guest"
    need_mount -t virtiofs -o ro "$LAB_SOURCE_TAG" "$NEWROOT$LAB_SOURCE_PATH"
fi
if [ -n "$LAB_RESULTS_TAG" ]; then
    # Same path as on the host, so paths in the command need no translation.
    # A path under a tmpfs mounted above (/tmp, /run...) is created there.
    [ -d "$NEWROOT$LAB_RESULTS_PATH" ] || mkdir -p "$NEWROOT$LAB_RESULTS_PATH" ||
        fail "results directory $LAB_RESULTS_PATH cannot be mounted in the guest"
    need_mount -t virtiofs "$LAB_RESULTS_TAG" "$NEWROOT$LAB_RESULTS_PATH"
fi

hostname dmabuf-top-lab
ip link set lo up 2>/dev/null

mkdir -p "$NEWROOT/run/dmabuf-top"
cp /job/command.sh "$NEWROOT/run/dmabuf-top/command.sh"

[ -n "$OUTPUT_PORT" ] || OUTPUT_PORT=/dev/console
# From here on the command runs: a failure before this line left nothing of it done (the host may boot again).
report "started"
# A clean environment: command.sh exports exactly what the host passed on.
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$LAB_HOME" TERM=dumb \
    chroot "$NEWROOT" /bin/sh /run/dmabuf-top/command.sh \
    <"/dev/null" >"$OUTPUT_PORT" 2>&1
status=$?

# Only the results share outlives the guest: flush it and nothing else (the
# scratch image is deleted, and unmounting it would cost half a second).
[ -n "$LAB_RESULTS_TAG" ] && sync -f "$NEWROOT$LAB_RESULTS_PATH"
report "exit=$status"
poweroff -f
