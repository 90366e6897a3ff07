//! The parsers of untrusted input: the policy file, the files `admin import` reads, and the
//! FIDO2 data a client relays to the daemon over the bus.

use std::path::Path;

use twofactorctl::import::parse_google_authenticator;
use twofactorctl::import_u2f::{FileOwner, parse_authfile};
use twofactord::fido2::{
    self, Assertion, AttestationObject, AuthenticatorData, CosePublicKey, Requirements,
    StoredCredential,
};
use twofactord::identity::Account;
use twofactord::policy::{Context, Policy};
use twofactord::recovery;
use twofactord::testkit::FakeAccounts;

use crate::Input;

/// The accounts every target resolves names against.
pub(crate) fn accounts() -> FakeAccounts {
    FakeAccounts::new()
        .user("root", 0, &[0])
        .user("alice", 1000, &[1000, 10])
        .user("bob", 1001, &[1001])
        .user("carol", 1002, &[1002, 27])
        .group("wheel", 10)
        .group("sudo", 27)
        .group("root", 0)
}

/// `twofactord --check` and the daemon's (re)load: `Policy::parse`, then what the daemon asks
/// a parsed policy at every login.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/twofactor/policy.toml");
    let policy = match Policy::parse(path, text, &accounts()) {
        Ok(p) => p,
        Err(e) => {
            // Errors name the file; a line, if any, is within the text.
            let shown = e.to_string();
            assert!(shown.contains("/etc/twofactor/policy.toml"), "{shown}");
            return;
        }
    };
    let who = [
        account("root", 0, &[0], &["root"]),
        account("alice", 1000, &[1000, 10], &["wheel"]),
        account("ghost", 4242, &[4242], &["ldapusers"]),
    ];
    for a in &who {
        for admin_required in [false, true] {
            let eff = policy.resolve(a, admin_required);
            let _ = eff.explain(path);
            for (service, rhost) in [("sshd", "192.0.2.7"), ("sudo", ""), ("login", "::1")] {
                let eff = policy.resolve_login(a, admin_required, Context { service, rhost });
                let _ = eff.explain(path);
            }
        }
        let _ = policy.onboarding(a);
        let _ = policy.is_admin(a);
    }
    let _ = policy.remember_window("sshd");
}

fn account(name: &str, uid: u32, gids: &[u32], groups: &[&str]) -> Account {
    Account {
        name: name.into(),
        uid,
        gids: gids.to_vec(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// `admin import google-authenticator`: a `~/.google_authenticator` file. Whatever the CLI
/// accepts, the daemon must accept too (the secret decodes, the scratch codes are codes).
pub fn google_authenticator(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ga) = parse_google_authenticator(text) else {
        return;
    };
    let secret = base32::decode(
        base32::Alphabet::Rfc4648 { padding: false },
        ga.secret.trim_end_matches('='),
    );
    assert!(
        secret.is_some_and(|s| !s.is_empty()),
        "the CLI accepted a secret that is not base32"
    );
    assert!(ga.period > 0, "a period of 0");
    let codes: Vec<String> = ga.scratch_codes.iter().map(|c| c.to_string()).collect();
    assert!(
        recovery::store_imported(&codes).is_ok(),
        "the CLI accepted scratch codes the daemon refuses"
    );
}

/// `admin import pam-u2f`: a pam_u2f authfile, old (U2F) and new (FIDO2) formats, owned by
/// root or by a user. A user's file yields only that user's lines; every key the CLI would
/// send is one the daemon can parse.
pub fn u2f_authfile(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let owner = if first & 1 == 0 {
        FileOwner::Root
    } else {
        FileOwner::User("alice")
    };
    let Ok(users) = parse_authfile(text, owner) else {
        return;
    };
    for u in &users {
        if let FileOwner::User(name) = owner {
            assert_eq!(u.name, name, "a user's file gave another user's line");
        }
        for c in &u.credentials {
            assert!(
                CosePublicKey::from_cose(&c.public_key_cose).is_ok(),
                "the CLI built a COSE key the daemon refuses (line {})",
                c.line
            );
            assert!(!c.credential_id.is_empty(), "an empty credential id");
        }
    }
}

/// FIDO2 data as the daemon receives it over the bus: a COSE key, authenticator data, an
/// attestation object, an assertion. Fields: [flags, cose, credential id, rp id, auth data,
/// signature, client data hash, attestation object, stored counter].
pub fn fido2(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let cose = input.field();
    let credential_id = input.field();
    let rp_id = String::from_utf8_lossy(input.field()).into_owned();
    let auth_data = input.field();
    let signature = input.field();
    let mut client_data_hash = [0u8; 32];
    for (d, s) in client_data_hash.iter_mut().zip(input.field()) {
        *d = *s;
    }
    let attestation = input.field();
    let stored_count = input.u32();
    let req = Requirements {
        user_presence: flags & 1 != 0,
        user_verification: flags & 2 != 0,
    };

    let _ = CosePublicKey::from_cose(cose);
    let _ = AttestationObject::parse(attestation);
    if let Ok(ad) = AuthenticatorData::parse(auth_data) {
        let _ = (ad.flags.user_present(), ad.flags.backed_up());
    }
    if let Ok(reg) = fido2::verify_registration(attestation, &rp_id, req) {
        assert_eq!(
            reg.rp_id_hash,
            fido2::rp_id_hash(&rp_id),
            "registration for another RP"
        );
        assert!(
            CosePublicKey::from_cose(&reg.public_key_cose).is_ok(),
            "a registered key the daemon cannot read back"
        );
    }
    let Ok(stored) =
        StoredCredential::from_cose(credential_id.to_vec(), cose, rp_id.clone(), stored_count)
    else {
        return;
    };
    let assertion = Assertion {
        credential_id,
        authenticator_data: auth_data,
        signature,
    };
    if let Ok(v) = fido2::verify_assertion(&stored, &assertion, &rp_id, &client_data_hash, req) {
        let ad = AuthenticatorData::parse(auth_data);
        assert!(ad.is_ok(), "accepted unparsable authenticator data");
        let Ok(ad) = ad else { return };
        assert_eq!(
            ad.rp_id_hash,
            fido2::rp_id_hash(&rp_id),
            "accepted for another RP"
        );
        assert!(
            !req.user_presence || v.flags.user_present(),
            "UP required, not set"
        );
        assert!(
            !req.user_verification || v.flags.user_verified(),
            "UV required, not set"
        );
        assert!(
            (v.sign_count == 0 && stored_count == 0) || v.sign_count > stored_count,
            "a counter that did not increase"
        );
        assert_eq!(
            credential_id,
            &stored.credential_id[..],
            "another credential"
        );
    }
}
