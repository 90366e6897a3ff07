//! When to ask for the key's PIN: the policy's wish against what the key's getInfo says.

use crate::{KeyError, UserVerification};

/// What getInfo's options say about user verification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct KeyCaps {
    /// `clientPin: true`: a PIN is set. (`false`: the key could have one but has none;
    /// absent: it cannot have one.)
    pub pin_set: bool,
    /// `alwaysUv: true` (CTAP 2.1): the key verifies the user for every operation.
    pub always_uv: bool,
    /// `makeCredUvNotRqd: true` (CTAP 2.1): the key makes non-resident credentials without
    /// the PIN even when one is set. CTAP 2.0 keys lack it and demand the PIN (pinAuth)
    /// for makeCredential once a PIN is set.
    pub make_cred_uv_not_rqd: bool,
}

impl KeyCaps {
    /// Reads the options map of getInfo, as the library lists it.
    pub fn from_options(options: &[(String, bool)]) -> Self {
        let on = |name: &str| options.iter().any(|(n, v)| n == name && *v);
        KeyCaps {
            pin_set: on("clientPin"),
            always_uv: on("alwaysUv"),
            make_cred_uv_not_rqd: on("makeCredUvNotRqd"),
        }
    }
}

/// The operation about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    /// makeCredential.
    Register,
    /// getAssertion.
    Assert,
}

/// Whether to ask the user for the PIN before the operation.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PinPlan {
    /// Ask; the operation then carries the pinAuth and the key sets UV.
    Ask,
    /// Do not ask; the operation asks for a touch only.
    Skip,
}

/// The decision table.
///
/// | policy      | key has a PIN                                    | key has none |
/// |-------------|--------------------------------------------------|--------------|
/// | required    | ask                                              | `PinNotSet`  |
/// | preferred   | ask                                              | skip         |
/// | discouraged | skip; ask if the key demands it (`alwaysUv`, or a registration without `makeCredUvNotRqd`) | skip |
pub(super) fn pin_plan(
    policy: UserVerification,
    caps: KeyCaps,
    operation: Operation,
) -> Result<PinPlan, KeyError> {
    let key_demands_pin =
        caps.always_uv || (operation == Operation::Register && !caps.make_cred_uv_not_rqd);
    match (policy, caps.pin_set) {
        (UserVerification::Required, false) => Err(KeyError::PinNotSet),
        (UserVerification::Required | UserVerification::Preferred, true) => Ok(PinPlan::Ask),
        (UserVerification::Preferred | UserVerification::Discouraged, false) => Ok(PinPlan::Skip),
        (UserVerification::Discouraged, true) if key_demands_pin => Ok(PinPlan::Ask),
        (UserVerification::Discouraged, true) => Ok(PinPlan::Skip),
    }
}

/// The PIN/UV auth protocol to use: 1 when the key offers it (every CTAP 2.0 key, most 2.1
/// ones, and the library's best-tried path), else 2; a key that lists none is CTAP 2.0.
pub(super) fn pin_protocol(offered: &[u32]) -> u8 {
    if offered.contains(&2) && !offered.contains(&1) {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UserVerification::{Discouraged, Preferred, Required};

    const NO_PIN: KeyCaps = KeyCaps {
        pin_set: false,
        always_uv: false,
        make_cred_uv_not_rqd: false,
    };
    const PIN_CTAP20: KeyCaps = KeyCaps {
        pin_set: true,
        always_uv: false,
        make_cred_uv_not_rqd: false,
    };
    const PIN_CTAP21: KeyCaps = KeyCaps {
        pin_set: true,
        always_uv: false,
        make_cred_uv_not_rqd: true,
    };
    const PIN_ALWAYS_UV: KeyCaps = KeyCaps {
        pin_set: true,
        always_uv: true,
        make_cred_uv_not_rqd: true,
    };

    #[test]
    fn decision_table() {
        use Operation::{Assert, Register};
        let ask = Ok(PinPlan::Ask);
        let skip = Ok(PinPlan::Skip);
        let not_set = Err(KeyError::PinNotSet);
        let table = [
            // Assertions.
            (Required, NO_PIN, Assert, &not_set),
            (Required, PIN_CTAP20, Assert, &ask),
            (Preferred, NO_PIN, Assert, &skip),
            (Preferred, PIN_CTAP20, Assert, &ask),
            (Discouraged, NO_PIN, Assert, &skip),
            (Discouraged, PIN_CTAP20, Assert, &skip),
            (Discouraged, PIN_CTAP21, Assert, &skip),
            (Discouraged, PIN_ALWAYS_UV, Assert, &ask),
            // Registrations.
            (Required, NO_PIN, Register, &not_set),
            (Required, PIN_CTAP21, Register, &ask),
            (Preferred, NO_PIN, Register, &skip),
            (Preferred, PIN_CTAP21, Register, &ask),
            (Discouraged, NO_PIN, Register, &skip),
            (Discouraged, PIN_CTAP20, Register, &ask),
            (Discouraged, PIN_CTAP21, Register, &skip),
            (Discouraged, PIN_ALWAYS_UV, Register, &ask),
        ];
        for (policy, caps, operation, want) in table {
            assert_eq!(
                &pin_plan(policy, caps, operation),
                want,
                "{policy:?} {caps:?} {operation:?}"
            );
        }
    }

    #[test]
    fn caps_come_from_the_options_that_are_true() {
        let options = |list: &[(&str, bool)]| -> Vec<(String, bool)> {
            list.iter().map(|(n, v)| (n.to_string(), *v)).collect()
        };
        assert_eq!(KeyCaps::from_options(&[]), NO_PIN);
        assert_eq!(
            KeyCaps::from_options(&options(&[("clientPin", false), ("up", true)])),
            NO_PIN
        );
        assert_eq!(
            KeyCaps::from_options(&options(&[("clientPin", true), ("rk", true)])),
            PIN_CTAP20
        );
        assert_eq!(
            KeyCaps::from_options(&options(&[
                ("clientPin", true),
                ("makeCredUvNotRqd", true),
                ("alwaysUv", true),
            ])),
            PIN_ALWAYS_UV
        );
    }

    #[test]
    fn pin_protocol_prefers_one() {
        assert_eq!(pin_protocol(&[]), 1);
        assert_eq!(pin_protocol(&[2, 1]), 1);
        assert_eq!(pin_protocol(&[2]), 2);
        assert_eq!(pin_protocol(&[3]), 1);
    }
}
