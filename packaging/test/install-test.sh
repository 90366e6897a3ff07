#!/usr/bin/env bash
# make install-test: the Debian package, installed and used in a fresh Debian root.
#
#   sudo make install-test          (or: sudo bash packaging/test/install-test.sh)
#
# 1. Builds the package (make deb), unless DEB=FILE names one.
# 2. Makes a fresh Debian root (debootstrap --variant=minbase plus the packages
#    the test needs), from the apt mirror this machine is configured with. The
#    debootstrapped root is cached as a tarball in
#    /var/cache/twofactor-install-test/ (TWOFACTOR_TEST_CACHE=DIR), keyed by
#    suite, architecture and package list; later runs only unpack it.
# 3. Unpacks it into a temporary directory and runs packaging/test/in-root.sh
#    in it: chroot, in private mount, pid, network, uts and ipc namespaces.
#    When the namespaces end, every process started in the root is gone and
#    every mount made for it is undone, whatever happened (pid 1 of the pid
#    namespace also stops the others and unmounts on exit). Nothing reaches the
#    host's system bus, its sshd or its network: the root has its own
#    loopback.
# 4. Removes the temporary root (KEEP_ROOT=1 keeps it for inspection).
#
# What in-root.sh checks is listed at its top. Exit status 0 only if every
# check passed. Needs root, util-linux (unshare, flock), iproute2 (ip) and
# debootstrap (installed with apt-get when missing).
#
# Environment: DEB=FILE (test this package, do not build),
#   TWOFACTOR_TEST_SUITE (default bookworm), TWOFACTOR_TEST_MIRROR=URL (default:
#   the mirror apt uses here for that suite), TWOFACTOR_TEST_CACHE=DIR,
#   KEEP_ROOT=1.
set -euo pipefail

SUITE=${TWOFACTOR_TEST_SUITE:-bookworm}
CACHE_DIR=${TWOFACTOR_TEST_CACHE:-/var/cache/twofactor-install-test}
# Besides minbase: what the package depends on (so that dpkg -i works without
# network) and what the test drives. man-db shows the man pages as installed.
PACKAGES=(adduser dbus libpam-runtime openssh-server openssh-client oathtool expect util-linux procps man-db sudo)
# Bump to rebuild every cached root (e.g. after changing how it is made).
CACHE_FORMAT=1

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

die() { echo "install-test: $*" >&2; exit 1; }
now() { date +%s; }
elapsed() { echo "$(($(now) - $1))s"; }

# ---------------------------------------------------------------------------
# Inside the namespaces (re-invoked through unshare, see run_in_root).
# ---------------------------------------------------------------------------
if [ "${1:-}" = --in-namespaces ]; then
    root=$2 deb=$3
    [ "$$" -eq 1 ] || die "--in-namespaces must run as pid 1 of a new pid namespace"
    cleanup_ns() {
        # Every other process in this pid namespace: the bus, the daemon, sshd.
        kill -TERM -1 2>/dev/null || true
        sleep 0.3
        kill -KILL -1 2>/dev/null || true
        for m in run sys dev proc; do
            umount -R -l "$root/$m" 2>/dev/null || true
        done
    }
    trap cleanup_ns EXIT
    mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    # Nothing in the test needs /sys; mount it read-only where allowed.
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys" 2>/dev/null || true
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
    ip link set lo up
    hostname twofactor-install-test
    set +e
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 TERM=dumb /bin/bash /root/in-root.sh "/root/$deb"
    rc=$?
    exit $rc
fi

# ---------------------------------------------------------------------------
# On the host.
# ---------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (sudo make install-test): it makes a chroot"
for tool in unshare chroot flock ip tar; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian packages util-linux, coreutils, iproute2, tar)"
done
if ! command -v debootstrap >/dev/null; then
    echo "install-test: installing debootstrap" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
arch=$(dpkg --print-architecture)
start=$(now)

# The unit's sandbox, as systemd rates it (informational; README reports it).
if command -v systemd-analyze >/dev/null; then
    score=$(systemd-analyze security --offline=yes --no-pager "$top/packaging/systemd/twofactord.service" 2>/dev/null \
        | sed -n 's/.*Overall exposure level for twofactord.service: *\([0-9.]* [A-Z]*\).*/\1/p')
    echo "install-test: systemd-analyze security --offline=yes twofactord.service: ${score:-no score}"
fi

# --- 1. the package --------------------------------------------------------
t=$(now)
if [ -z "${DEB:-}" ]; then
    make -C "$top" --no-print-directory deb
    DEB=$(ls -t "$top"/target/deb/twofactor_*_"$arch".deb | head -n 1)
fi
[ -f "$DEB" ] || die "no package: $DEB"
DEB=$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")
echo "install-test: package $DEB ($(stat -c %s "$DEB") bytes), $(elapsed "$t")"
# The README states the package's size and dependencies: they must still be true (within 15%
# for the sizes), or the README has drifted from what is shipped.
readme_line=$(tr '\n' ' ' <"$top/README.md" | grep -o 'The package ([^)]*installed; depends on[^;]*; *recommends [^;)]*' | head -n 1)
[ -n "$readme_line" ] || die "README: no 'The package (... MB, ... MB installed; depends on ...' sentence"
said_mb=$(sed -n 's/.*about \([0-9.]*\) MB, .*/\1/p' <<<"$readme_line")
said_inst=$(sed -n 's/.*, \([0-9.]*\) MB installed.*/\1/p' <<<"$readme_line")
real_mb=$(stat -c %s "$DEB")
real_inst=$(dpkg-deb --field "$DEB" Installed-Size)
awk -v said="$said_mb" -v real="$real_mb" -v si="$said_inst" -v ri="$real_inst" 'BEGIN {
    r = real / 1e6; i = ri / 1024;
    if (said == "" || si == "" || r > said * 1.15 || r < said * 0.85 || i > si * 1.15 || i < si * 0.85) {
        printf "README says about %s MB, %s MB installed; the package is %.1f MB, %.0f MB installed\n", said, si, r, i > "/dev/stderr"; exit 1 }
}' || die "README: the package size is out of date"
said_deps=$(grep -o 'depends on.*recommends' <<<"$readme_line" | grep -o '`[a-z0-9.+-]*`' | tr -d '`' | sort | tr '\n' ' ')
real_deps=$(dpkg-deb --field "$DEB" Depends | tr ',' '\n' | sed 's/(.*//; s/ //g' | grep -v '^$' | sort | tr '\n' ' ')
[ "$said_deps" = "$real_deps" ] || die "README says the package depends on: $said_deps; it depends on: $real_deps"
said_recs=$(grep -o 'recommends.*' <<<"$readme_line" | grep -o '`[a-z0-9.+-]*`' | tr -d '`' | sort | tr '\n' ' ')
real_recs=$(dpkg-deb --field "$DEB" Recommends | tr ',' '\n' | sed 's/(.*//; s/ //g' | grep -v '^$' | sort | tr '\n' ' ')
[ "$said_recs" = "$real_recs" ] || die "README says the package recommends: $said_recs; it recommends: $real_recs"
echo "install-test: the README's size and dependencies match the package"

# --- 2. the cached Debian root ---------------------------------------------
# The mirror apt uses here for "$SUITE main", from /etc/apt/sources.list and
# sources.list.d (one-line and deb822 formats).
find_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) != suite) next
                for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v suite="$SUITE" '
            function flush() {
                if (!done && index(" " types " ", " deb ") && enabled != "no" &&
                    index(" " suites " ", " " suite " ") && index(" " comps " ", " main ")) {
                    split(uris, u, " "); print u[1]; done = 1
                }
                types = uris = suites = comps = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key); val = $0
                sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "components") comps = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush() }' "$f"
    done
}

if command -v zstd >/dev/null; then
    compress=(zstd -q -T0 -3) decompress=(zstd -q -dc) ext=tar.zst
else
    compress=(gzip -1) decompress=(gzip -dc) ext=tar.gz
fi
key=$(printf '%s\n' "format=$CACHE_FORMAT" "suite=$SUITE" "arch=$arch" "variant=minbase" "${PACKAGES[@]}" \
    | sha256sum | cut -c1-16)
tarball="$CACHE_DIR/$SUITE-$arch-$key.$ext"

mkdir -p "$CACHE_DIR"
t=$(now)
(
    # One builder at a time; a second run waits and then uses its result.
    flock 9
    [ -f "$tarball" ] && exit 0
    mirror=${TWOFACTOR_TEST_MIRROR:-$(find_mirror | head -n 1)}
    [ -n "$mirror" ] || die "no apt source for '$SUITE main' in /etc/apt/sources.list*: set TWOFACTOR_TEST_MIRROR=URL"
    echo "install-test: no cached root for $SUITE/$arch ($key): debootstrap from $mirror (a few minutes, once)"
    build=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    trap 'rm -rf --one-file-system "$build"' EXIT
    include=$(IFS=,; echo "${PACKAGES[*]}")
    # In a private mount namespace: whatever debootstrap mounts in the
    # target (proc, sys) goes away with it, even if it fails half-way.
    if ! unshare --mount --propagation private \
        debootstrap --variant=minbase --components=main --include="$include" \
        "$SUITE" "$build/root" "$mirror" >"$build/debootstrap.log" 2>&1; then
        tail -n 30 "$build/debootstrap.log" >&2
        [ -f "$build/root/debootstrap/debootstrap.log" ] && tail -n 30 "$build/root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    fi
    # No downloaded packages and no package lists: the test runs offline.
    rm -rf "$build/root/var/cache/apt/archives/"*.deb "$build/root/var/lib/apt/lists/"* 2>/dev/null || true
    tar --numeric-owner -C "$build/root" -cf - . | "${compress[@]}" >"$build/root.$ext"
    mv "$build/root.$ext" "$tarball"
    # Older roots of this suite and architecture are of no more use.
    find "$CACHE_DIR" -maxdepth 1 -name "$SUITE-$arch-*.tar.*" ! -name "$(basename "$tarball")" -delete
    echo "install-test: cached $tarball ($(du -h "$tarball" | cut -f1))"
) 9>"$CACHE_DIR/.lock"
echo "install-test: Debian root ready, $(elapsed "$t")"

# --- 3. a fresh copy, and the test in it -----------------------------------
work=$(mktemp -d /var/tmp/twofactor-install-test.XXXXXX)
cleanup() {
    # Mounts were made in the namespaces only; never delete through one.
    if grep -qF " $work/" /proc/self/mountinfo; then
        echo "install-test: mounts remain under $work; not removing it" >&2
    elif [ -n "${KEEP_ROOT:-}" ]; then
        echo "install-test: kept the root in $work/root"
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT
root="$work/root"
mkdir "$root"
t=$(now)
"${decompress[@]}" "$tarball" | tar --numeric-owner -C "$root" -xf -
install -m 0644 "$DEB" "$root/root/"
install -m 0755 "$here/in-root.sh" "$root/root/in-root.sh"
# The README: the test takes its sshd and PAM recipes from it, so the two cannot drift.
install -m 0644 "$top/README.md" "$root/root/README.md"
echo "install-test: unpacked into $root, $(elapsed "$t")"

t=$(now)
set +e
unshare --mount --propagation private --pid --fork --net --uts --ipc \
    bash "$0" --in-namespaces "$root" "$(basename "$DEB")"
rc=$?
set -e
echo "install-test: tests in the root $(elapsed "$t"); total $(elapsed "$start")"
[ "$rc" -eq 0 ] || die "FAILED (exit $rc)"
