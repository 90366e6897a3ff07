#!/usr/bin/env bash
# Installs the Debian packages twofactor needs to build, run the demo and run the tests.
# Only what is missing is installed; nothing else on the system is changed.
set -euo pipefail

packages=(
  # build
  gcc pkg-config libpam0g-dev
  # `make fuzz`: libFuzzer (libfuzzer-sys) is C++
  g++
  # the security-key HID path (twofactor-key feature "hid": hidapi on hidraw, libudev)
  libudev-dev
  # run: a bus, PAM modules (pam_permit for the demo's stack)
  dbus dbus-daemon libpam-modules libpam-runtime
  # demo and tests: independent code generator, PAM drivers, callers with other uids
  oathtool faketime pamtester libpam-wrapper util-linux passwd systemd
  # the enrollment QR code, scanned as a person would see it
  zbar-tools
  # import tests: files written by the real google-authenticator tool
  libpam-google-authenticator
  # end-to-end test with a real OpenSSH server
  openssh-server openssh-client sshpass expect
  # the fleet store's tests start a private PostgreSQL (initdb, Unix socket only)
  postgresql
  # the Debian package and its install test in a fresh debootstrapped root
  dpkg-dev binutils debootstrap zstd iproute2
  # notify_command mail: the documented script (twofactord(8)) submits over SMTP with curl
  curl
)

missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "twofactor: installing missing Debian packages: ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "twofactor: cargo (Rust 1.89 or newer) is needed: https://rustup.rs" >&2
  exit 1
fi
