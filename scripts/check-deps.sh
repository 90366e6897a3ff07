#!/usr/bin/env bash
# Dependency rules that CI enforces (part of `make lint`):
# - the daemon links no FIDO client code: no hidapi, no ctap-hid-fido2, no twofactor-key;
# - no shipped binary (daemon, CLI, PAM module) contains the dev-only software authenticator;
# - the shipped PAM module and CLI do carry the real HID path.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

deps() {
    # Normal and build dependencies only: dev-dependencies never reach a shipped binary.
    "$CARGO" tree -p "$1" -e normal,build --prefix none --no-dedupe \
        | awk '{print $1}' | sort -u
}

fail=0
daemon=$(deps twofactord)
for forbidden in hidapi ctap-hid-fido2 twofactor-key twofactor-softkey; do
    if grep -qx "$forbidden" <<<"$daemon"; then
        echo "check-deps: twofactord depends on $forbidden" >&2
        fail=1
    fi
done
for shipped in twofactorctl pam_twofactor; do
    tree=$(deps "$shipped")
    if grep -qx twofactor-softkey <<<"$tree"; then
        echo "check-deps: $shipped depends on the dev-only twofactor-softkey" >&2
        fail=1
    fi
    if ! grep -qx hidapi <<<"$tree"; then
        echo "check-deps: $shipped does not link hidapi (the HID path is missing)" >&2
        fail=1
    fi
done
# The PAM module and the CLI run in other programs' processes: no async runtime, no database
# client (the fleet backend lives in the daemon only).
for shipped in twofactorctl pam_twofactor; do
    tree=$(deps "$shipped")
    for forbidden in tokio postgres tokio-postgres rusqlite; do
        if grep -qx "$forbidden" <<<"$tree"; then
            echo "check-deps: $shipped depends on $forbidden" >&2
            fail=1
        fi
    done
done
if [ "$fail" -ne 0 ]; then
    exit 1
fi
echo "check-deps: twofactord has no HID or software-authenticator code; twofactorctl and pam_twofactor have the HID path, no software authenticator, no tokio and no database client"
