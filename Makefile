# twofactor: two-factor authentication for Unix logins.
#
#   make demo                         the main job: a real 2FA login on a private bus (touches nothing)
#   make test                         every test (installs missing Debian packages; run as root)
#   make deps                         only install the missing Debian packages
#   make build                        release build of the whole workspace
#   make bench [BENCH_QUICK=1]        twofactor vs its floor vs google-authenticator vs pam_permit,
#                                     side by side (root; creates and removes tfb* accounts)
#   make fuzz [FUZZ_SECONDS=600]      every fuzz target for FUZZ_SECONDS each; make miri: Miri
#   make install [DESTDIR=...] [PREFIX=/usr] [PAMDIR=...] [UNITDIR=...]
#   make uninstall                    (keeps /etc/twofactor and /var/lib/twofactord)

CARGO ?= cargo
INSTALL ?= install

.DEFAULT_GOAL := build

# --- demo and tests ---

.PHONY: deps demo test lint
deps:
	bash scripts/deps.sh

demo: deps
	$(CARGO) build --workspace
	bash scripts/demo.sh

test: deps
	$(CARGO) build --workspace
	$(CARGO) test --workspace --no-fail-fast

# Benchmarks are not tests: not part of `make test` or CI. Root (it creates bench accounts
# tfb0000…, removed at the end; the trap removes them also after a failure or ^C).
# BENCH_QUICK=1: a smaller run; BENCH_ROUNDS (3); BENCH_SCALE_MAX (1000000).
.PHONY: bench
bench: deps
	$(CARGO) build --release --workspace
	@trap '$(RELEASE_DIR)/bench-login cleanup' EXIT INT TERM HUP; \
	    BENCH_QUICK="$(BENCH_QUICK)" BENCH_ROUNDS="$(BENCH_ROUNDS)" BENCH_SCALE_MAX="$(BENCH_SCALE_MAX)" \
	    $(RELEASE_DIR)/bench-login run
# Robustness: libFuzzer on every parser and the login state machine (scripts/fuzz.sh), and
# Miri on the daemon's pure modules (scripts/miri.sh). `make test` runs the fuzz targets on
# stable too, bounded (twofactor-fuzz/tests/bounded.rs).
FUZZ_SECONDS ?= 600
.PHONY: fuzz fuzz-ci miri
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

fuzz-ci:
	FUZZ_SECONDS=30 bash scripts/fuzz.sh

miri:
	bash scripts/miri.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	bash scripts/check-deps.sh

# --- install ---
#
# Installation layout (every directory is prefixed with $(DESTDIR)):
#   $(SBINDIR)/twofactord                       the daemon
#   $(BINDIR)/twofactorctl                      the CLI
#   $(PAMDIR)/pam_twofactor.so                  the PAM module
#   $(DBUS_POLICYDIR)/org.twofactor.TwoFactor1.conf      bus policy
#   $(DBUS_SERVICEDIR)/org.twofactor.TwoFactor1.service  bus activation
#   $(UNITDIR)/twofactord.service               systemd unit
#   $(SYSUSERSDIR)/twofactord.conf              system user _twofactord
#   $(PAMCONFIGDIR)/twofactor                   pam-auth-update profile
#   $(SYSCONFDIR)/twofactor/policy.toml         example policy, only if absent
#   $(DOCDIR)/                                  policy example, PAM excerpts
#
# The unit and the bus activation file name /usr/sbin/twofactord: with another
# PREFIX, adjust them (or use a systemd drop-in).

PREFIX ?= /usr
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
DOCDIR ?= $(PREFIX)/share/doc/twofactor
SYSCONFDIR ?= /etc
# Multiarch triplet for the PAM module directory, e.g. x86_64-linux-gnu.
MULTIARCH ?= $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
PAMDIR ?= /lib/$(MULTIARCH)/security
UNITDIR ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
DBUS_POLICYDIR ?= /usr/share/dbus-1/system.d
DBUS_SERVICEDIR ?= /usr/share/dbus-1/system-services
PAMCONFIGDIR ?= /usr/share/pam-configs

RELEASE_DIR := target/release
DBUS_NAME := org.twofactor.TwoFactor1
PAM_EXCERPTS := README sshd sudo login

.PHONY: build install uninstall

build:
	$(CARGO) build --release --workspace

# `install` does not build: run `make build` first (as your user; install as
# root), so that root never runs cargo in your tree.
install:
	@for f in twofactord twofactorctl libpam_twofactor.so; do \
	    test -f $(RELEASE_DIR)/$$f || { echo "$(RELEASE_DIR)/$$f is missing: run 'make build' first" >&2; exit 1; }; \
	done
	@test -n "$(MULTIARCH)" -o "$(origin PAMDIR)" != file || { \
	    echo "cannot determine the multiarch triplet: set PAMDIR=... (or MULTIARCH=...)" >&2; exit 1; }
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(PAMDIR)
	$(INSTALL) -m 0755 $(RELEASE_DIR)/twofactord $(DESTDIR)$(SBINDIR)/twofactord
	$(INSTALL) -m 0755 $(RELEASE_DIR)/twofactorctl $(DESTDIR)$(BINDIR)/twofactorctl
	$(INSTALL) -m 0644 $(RELEASE_DIR)/libpam_twofactor.so $(DESTDIR)$(PAMDIR)/pam_twofactor.so
	$(INSTALL) -d -m 0755 $(DESTDIR)$(DBUS_POLICYDIR) $(DESTDIR)$(DBUS_SERVICEDIR)
	$(INSTALL) -m 0644 packaging/dbus/$(DBUS_NAME).conf $(DESTDIR)$(DBUS_POLICYDIR)/$(DBUS_NAME).conf
	$(INSTALL) -m 0644 packaging/dbus/$(DBUS_NAME).service $(DESTDIR)$(DBUS_SERVICEDIR)/$(DBUS_NAME).service
	$(INSTALL) -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(PAMCONFIGDIR)
	$(INSTALL) -m 0644 packaging/systemd/twofactord.service $(DESTDIR)$(UNITDIR)/twofactord.service
	$(INSTALL) -m 0644 packaging/sysusers.d/twofactord.conf $(DESTDIR)$(SYSUSERSDIR)/twofactord.conf
	$(INSTALL) -m 0644 packaging/pam-configs/twofactor $(DESTDIR)$(PAMCONFIGDIR)/twofactor
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/twofactor
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/twofactor/policy.toml ]; then \
	    echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/twofactor/policy.toml"; \
	else \
	    echo "$(INSTALL) -m 0644 conf/policy.toml $(DESTDIR)$(SYSCONFDIR)/twofactor/policy.toml"; \
	    $(INSTALL) -m 0644 conf/policy.toml $(DESTDIR)$(SYSCONFDIR)/twofactor/policy.toml; \
	fi
	@# The key that seals secrets at rest, made on the host itself: never in a staging tree
	@# (DESTDIR: a package would ship one key to every host; its postinst makes it instead).
	@if [ -n "$(DESTDIR)" ]; then :; \
	elif [ -e $(SYSCONFDIR)/twofactor/store.key ]; then \
	    echo "keeping existing $(SYSCONFDIR)/twofactor/store.key"; \
	else \
	    echo "$(SBINDIR)/twofactord genkey $(SYSCONFDIR)/twofactor/store.key"; \
	    $(SBINDIR)/twofactord genkey $(SYSCONFDIR)/twofactor/store.key; \
	fi
	$(INSTALL) -d -m 0755 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(DOCDIR)/pam
	$(INSTALL) -m 0644 conf/policy.toml $(DESTDIR)$(DOCDIR)/policy.toml.example
	$(INSTALL) -m 0644 $(addprefix packaging/pam/,$(PAM_EXCERPTS)) $(DESTDIR)$(DOCDIR)/pam/
	$(INSTALL) -d -m 0755 $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	$(INSTALL) -m 0644 packaging/man/twofactorctl.1 $(DESTDIR)$(MANDIR)/man1/twofactorctl.1
	$(INSTALL) -m 0644 packaging/man/twofactor-policy.5 $(DESTDIR)$(MANDIR)/man5/twofactor-policy.5
	$(INSTALL) -m 0644 packaging/man/twofactord.8 $(DESTDIR)$(MANDIR)/man8/twofactord.8
	$(INSTALL) -m 0644 packaging/man/pam_twofactor.8 $(DESTDIR)$(MANDIR)/man8/pam_twofactor.8
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(RELEASE_DIR)/twofactorctl completions bash > $(DESTDIR)$(BASHCOMPDIR)/twofactorctl
	$(RELEASE_DIR)/twofactorctl completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_twofactorctl
	$(RELEASE_DIR)/twofactorctl completions fish > $(DESTDIR)$(FISHCOMPDIR)/twofactorctl.fish
	chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/twofactorctl $(DESTDIR)$(ZSHCOMPDIR)/_twofactorctl $(DESTDIR)$(FISHCOMPDIR)/twofactorctl.fish
	@echo
	@echo "Installed. On a live system (DESTDIR empty), as root:"
	@echo "  systemd-sysusers twofactord.conf    # creates the user _twofactord"
	@echo "  systemctl daemon-reload && systemctl reload dbus"
	@echo "  twofactord --check && systemctl enable --now twofactord"
	@echo "  then add pam_twofactor to PAM: see $(DOCDIR)/pam/README"

# Removes what `install` installed, except the admin's policy
# ($(SYSCONFDIR)/twofactor) and the daemon's state (/var/lib/twofactord:
# secrets, recovery codes, audit log). Remove pam_twofactor from the PAM stacks
# (`pam-auth-update --disable twofactor`, /etc/pam.d) BEFORE uninstalling: a
# stack naming a missing module fails every login through it.
# Refuses while an active line in /etc/pam.d names the module (FORCE=1 to
# override).
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -z "$(FORCE)" ] && \
	    grep -qsE '^[[:space:]]*[^#[:space:]].*pam_twofactor' /etc/pam.d/*; then \
	    echo "refusing to uninstall: these PAM stacks still use pam_twofactor.so:" >&2; \
	    grep -lsE '^[[:space:]]*[^#[:space:]].*pam_twofactor' /etc/pam.d/* >&2; \
	    echo "remove it first (pam-auth-update --disable twofactor), or run with FORCE=1" >&2; \
	    exit 1; \
	fi
	rm -f $(DESTDIR)$(SBINDIR)/twofactord
	rm -f $(DESTDIR)$(BINDIR)/twofactorctl
	rm -f $(DESTDIR)$(PAMDIR)/pam_twofactor.so
	rm -f $(DESTDIR)$(DBUS_POLICYDIR)/$(DBUS_NAME).conf
	rm -f $(DESTDIR)$(DBUS_SERVICEDIR)/$(DBUS_NAME).service
	rm -f $(DESTDIR)$(UNITDIR)/twofactord.service
	rm -f $(DESTDIR)$(SYSUSERSDIR)/twofactord.conf
	rm -f $(DESTDIR)$(PAMCONFIGDIR)/twofactor
	rm -f $(DESTDIR)$(DOCDIR)/policy.toml.example
	rm -f $(addprefix $(DESTDIR)$(DOCDIR)/pam/,$(PAM_EXCERPTS))
	rmdir $(DESTDIR)$(DOCDIR)/pam $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	rm -f $(DESTDIR)$(MANDIR)/man1/twofactorctl.1 $(DESTDIR)$(MANDIR)/man5/twofactor-policy.5
	rm -f $(DESTDIR)$(MANDIR)/man8/twofactord.8 $(DESTDIR)$(MANDIR)/man8/pam_twofactor.8
	rm -f $(DESTDIR)$(BASHCOMPDIR)/twofactorctl $(DESTDIR)$(ZSHCOMPDIR)/_twofactorctl $(DESTDIR)$(FISHCOMPDIR)/twofactorctl.fish

# --- deb ---
#
#   make deb             release build, then target/deb/twofactor_VERSION_ARCH.deb
#                        (packaging/deb/build-deb.sh: dpkg-deb on a `make install` tree)
#   make install-test    installs that package in a fresh Debian root and logs in
#                        over ssh with a code (packaging/test/install-test.sh; root)
#
# Also used by `install`/`uninstall` above (every directory prefixed with $(DESTDIR)):
#   $(MANDIR)/man{1,5,8}/                       man pages (packaging/man/)
#   $(BASHCOMPDIR)/twofactorctl                 shell completions, generated by
#   $(ZSHCOMPDIR)/_twofactorctl                   `twofactorctl completions SHELL`
#   $(FISHCOMPDIR)/twofactorctl.fish

MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

.PHONY: deb install-test
deb: build
	bash packaging/deb/build-deb.sh

# Builds the .deb itself (make deb); the Debian root is cached in
# /var/cache/twofactor-install-test. Run as root.
install-test:
	bash packaging/test/install-test.sh
