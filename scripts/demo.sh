#!/usr/bin/env bash
# twofactor in one command: a private bus, the real daemon with a temporary state directory,
# a real enrollment of the current user, and real PAM logins (pamtester through pam_wrapper)
# with codes from oathtool. Touches nothing of the system: no /etc/pam.d, no system bus, no
# /var/lib. Everything lives in a temporary directory that is removed at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$here/target}/debug"
user="$(id -un)"
work="$(mktemp -d /tmp/twofactor-demo.XXXXXX)"
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# --- a private, system-like bus with the shipped bus policy ---------------------------------
# The demo's daemon runs as you: let your user own the name on this private bus.
sed -e "s|@SOCKET@|$work/bus|" \
    -e "s|@SHIPPED@|$here/packaging/dbus/org.twofactor.TwoFactor1.conf|" \
    -e "s|@EXTRA@|<policy user=\"$user\"><allow own=\"org.twofactor.TwoFactor1\"/></policy>|" \
    "$here/tests/private-bus.conf.in" >"$work/bus.conf"
dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile --print-address >"$work/address" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/address" ] && break; sleep 0.05; done
bus="$(head -1 "$work/address")"

# --- the daemon: embedded policy, temporary state -------------------------------------------
cat >"$work/policy.toml" <<'POLICY'
# The demo's policy: 2FA is optional; once you enroll, it is asked for.
default_mode = "optional"
[login]
attempts = 1
POLICY
# The key that seals secrets at rest, as the package makes /etc/twofactor/store.key.
"$bin/twofactord" genkey "$work/store.key" >/dev/null
"$bin/twofactord" --bus "$bus" --policy "$work/policy.toml" --state-dir "$work/state" \
  --offline-snapshot "$work/offline" \
  --secret-key-file "$work/store.key" 2>"$work/daemon.log" &
pids+=($!)
for _ in $(seq 100); do
  busctl --address="$bus" status org.twofactor.TwoFactor1 >/dev/null 2>&1 && break
  sleep 0.05
done
ctl() { "$bin/twofactorctl" --bus "$bus" "$@"; }

say "twofactord is running on a private bus ($bus), state in $work/state (secrets sealed with $work/store.key)"
ctl status

# --- enroll, as a user would: QR code, secret, then the current code ------------------------
say "Enrolling $user: twofactorctl enroll totp (the code is typed by oathtool, standing in for your phone)"
coproc ENROLL { "$bin/twofactorctl" --bus "$bus" enroll totp 2>&1; }
enroll_pid=$ENROLL_PID
exec {from_ctl}<&"${ENROLL[0]}" {to_ctl}>&"${ENROLL[1]}"
secret=""
while IFS= read -r line <&"$from_ctl"; do
  printf '%s\n' "$line"
  case "$line" in
    "Or enter this secret by hand: "*) secret="${line#Or enter this secret by hand: }" ;;
    "URI: "*) break ;;
  esac
done
# Stay inside one 30-second step so the demo's codes line up.
while [ $(( $(date +%s) % 30 )) -ge 25 ]; do sleep 1; done
code="$(oathtool --totp -b "$secret")"
echo "> $code"
echo "$code" >&"$to_ctl"
exec {to_ctl}>&-
recovery=""
while IFS= read -r line <&"$from_ctl"; do
  printf '%s\n' "$line"
  if [[ -z "$recovery" && "$line" =~ ^\ +([a-z2-7]{4}-){3}[a-z2-7]{4}$ ]]; then
    recovery="${line// /}"
  fi
done
wait "$enroll_pid" || { echo "demo: enrollment failed" >&2; exit 1; }

# --- a real PAM stack, loaded by a real PAM application --------------------------------------
mkdir "$work/pam.d"
printf 'auth required %s bus=%s\naccount required pam_permit.so\n' \
  "$bin/libpam_twofactor.so" "$bus" >"$work/pam.d/twofactor-demo"
cp "$work/pam.d/twofactor-demo" "$work/pam.d/other"
pam() {
  LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$work/pam.d" \
    pamtester twofactor-demo "$user" authenticate 2>&1
}

say "Logging in through libpam (pamtester, service twofactor-demo) with the current code"
# The enrollment spent this step's code: wait for the next one, as a real user would.
now=$(date +%s); sleep $(( 30 - now % 30 + 1 ))
code="$(oathtool --totp -b "$secret")"
echo "> $code"
echo "$code" | pam
say "The same code again: a replay, refused"
echo "> $code"
if echo "$code" | pam; then echo "demo: a replayed code was accepted" >&2; exit 1; fi

say "A recovery code works once"
echo "> $recovery"
echo "$recovery" | pam
if echo "$recovery" | pam >/dev/null; then echo "demo: a recovery code worked twice" >&2; exit 1; fi
echo "(and a second time: refused)"

say "What the daemon knows now"
ctl status
say "The audit log (no secrets, no codes)"
ctl admin audit
say "Done. Everything above ran on a private bus with a temporary state directory, now removed."
