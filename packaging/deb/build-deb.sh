#!/usr/bin/env bash
# Builds the Debian package twofactor_VERSION_ARCH.deb with dpkg-deb, from a
# staging tree made by `make install DESTDIR=...` (so the package installs
# exactly what `make install` does), plus the maintainer scripts, conffiles and
# copyright in this directory.
#
#   bash packaging/deb/build-deb.sh      (or: make deb, which builds first)
#
# Needs the release build (make build), dpkg-dev (dpkg-shlibdeps,
# dpkg-architecture) and binutils (strip). Runs as any user: file ownership in
# the package is root:root (dpkg-deb --root-owner-group), no fakeroot needed.
# Output: target/deb/twofactor_VERSION_ARCH.deb (DEB_OUTDIR= to change).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
here=packaging/deb
out=${DEB_OUTDIR:-target/deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

die() { echo "build-deb: $*" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps dpkg-architecture strip; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian packages dpkg-dev and binutils)"
done

version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
[ -n "$version" ] || die "no version in [workspace.package] of Cargo.toml"
arch=$(dpkg --print-architecture)
deb="$out/twofactor_${version}_${arch}.deb"

# Reproducible timestamps: the last commit's time (or Cargo.toml's, outside git).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)
fi
export SOURCE_DATE_EPOCH

stage="$out/stage"
root="$stage/root"
rm -rf "$stage"
mkdir -p "$root"
# A umask of 022 whatever the caller's: directories made by install -d and
# mkdir -p are 0755 in the package.
umask 022

# --- files: exactly what `make install` installs ---------------------------
make --no-print-directory install DESTDIR="$root" PREFIX=/usr SYSCONFDIR=/etc >"$stage/install.log" \
    || { cat "$stage/install.log" >&2; die "make install failed"; }

# As dh_strip does: no debugging symbols in the package (the PAM module keeps
# its dynamic symbol table, which is what libpam looks up).
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
module="$root/lib/$multiarch/security/pam_twofactor.so"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$module"
strip --remove-section=.comment --remove-section=.note "$root/usr/sbin/twofactord" "$root/usr/bin/twofactorctl"

# Man pages: no groff warnings (they would show up as lintian errors), then
# compressed, as in every Debian package.
if command -v groff >/dev/null; then
    for page in packaging/man/*.[0-9]; do
        warnings=$(groff -ww -man -z "$page" 2>&1)
        [ -z "$warnings" ] || die "$page: groff warnings:"$'\n'"$warnings"
    done
fi
if [ -d "$root/usr/share/man" ]; then
    find "$root/usr/share/man" -type f -name '*.[0-9]' -exec gzip -9n {} +
fi

doc="$root/usr/share/doc/twofactor"
install -d "$doc"
install -m 0644 "$here/copyright" "$doc/copyright"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo "twofactor ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the twofactor sources, commit $commit (a native package:"
    echo "    the history is in the source repository)."
    echo
    echo " -- twofactor developers <twofactor@example.invalid>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"

# --- control area ----------------------------------------------------------
control="$root/DEBIAN"
install -d "$control"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$control/"
install -m 0644 "$here/conffiles" "$control/conffiles"
while read -r f; do
    [ -f "$root$f" ] || die "conffile $f is not in the package"
done <"$control/conffiles"

# Shared-library dependencies, computed from the binaries (libc6, libgcc-s1,
# libpam0g with their minimum versions). dpkg-shlibdeps wants a debian/control.
mkdir -p "$stage/debian"
printf 'Source: twofactor\n\nPackage: twofactor\nArchitecture: any\n' >"$stage/debian/control"
shlibs=$(cd "$stage" && dpkg-shlibdeps -O -e"root/usr/sbin/twofactord" -e"root/usr/bin/twofactorctl" \
    -e"root/lib/$multiarch/security/pam_twofactor.so" 2>"$stage/shlibdeps.log") \
    || { cat "$stage/shlibdeps.log" >&2; die "dpkg-shlibdeps failed"; }
shlibs=${shlibs#shlibs:Depends=}
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies"
# dbus: the system bus (and dbus-send, used by the maintainer scripts);
# adduser: creates _twofactord; libpam-runtime: pam-auth-update.
depends="$shlibs, dbus, adduser, libpam-runtime (>= 1.0.1-6)"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" \
    -e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@DEPENDS@/$depends/" \
    "$here/control.in" >"$control/control"

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    >"$control/md5sums"
chmod 0644 "$control/md5sums" "$control/control"

# --- build -----------------------------------------------------------------
find "$root" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "built $deb ($(stat -c %s "$deb") bytes)"
dpkg-deb --field "$deb" Package Version Architecture Depends
