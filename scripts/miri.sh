#!/usr/bin/env bash
# Runs the unit tests of the code that does not call into C under Miri (undefined behaviour,
# out-of-bounds and use-after-free, leaks, data races in what it interprets): the daemon's pure
# modules (TOTP, recovery codes, the FIDO2 parsers and verifier, the authorization table) and
# the CLI's import parsers. Not under Miri, because Miri cannot run foreign (C) functions: the
# PAM module and its FFI (libpam), syslog, NSS lookups (getpwnam_r & co. in identity), SQLite
# (store, and the engine on top of it), the bus (sockets), the clock's adjtimex.
#
# Needs the nightly toolchain with the miri and rust-src components; without them it says so
# and exits 0 (a fresh CI machine has the stable toolchain only and cannot fetch another).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri: skipped: needs the nightly toolchain with miri and rust-src" \
        "(rustup toolchain install nightly --component miri,rust-src)" >&2
    exit 0
fi
# Isolation off: the FIDO2 tests read the shared test vectors file.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
# Interpreted code is slow (a P-256 signature or key generation takes minutes): what runs is
# the tests that exercise parsing and table logic, not the signature sweeps (the FIDO2 mutation
# loop, the test vectors, the software-key round trips, the pam_u2f point checks).
cargo +nightly miri test -p twofactord --lib -- totp:: recovery:: authz:: \
    fido2::tests::unit::bad_cbor \
    fido2::tests::unit::oversized fido2::tests::unit::credential_id_length \
    fido2::tests::unit::flags_must_match
# The pam_u2f parser too, but for the one test that checks dozens of curve points (minutes each
# when interpreted; its parsing paths are covered by the others).
cargo +nightly miri test -p twofactorctl --lib -- import::tests import_u2f::tests \
    --skip import_u2f::tests::every_refusal_names_its_line
echo "miri: twofactord (totp, recovery, authz, the FIDO2 parsers) and the import parsers (google-authenticator, pam_u2f) are clean"
