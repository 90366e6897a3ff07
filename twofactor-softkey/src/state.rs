//! The soft key's state file: what it holds and how it is written.
//!
//! ```json
//! {
//!   "aaguid": "hex, 16 bytes",
//!   "counter": 0,
//!   "pin": null,
//!   "pin_retries": 8,
//!   "present": true,
//!   "omit_up": false,
//!   "omit_uv": false,
//!   "counter_mode": "increment",
//!   "wrong_rp_id": false,
//!   "decline": false,
//!   "algorithm": "es256",
//!   "credentials": [
//!     {"rp_id": "…", "credential_id": "hex", "algorithm": "es256", "private_key": "hex"}
//!   ]
//! }
//! ```
//! Byte strings are lowercase hex. Every field but `aaguid` may be left out (its default
//! applies); unknown fields are refused, so a misspelt knob in a hand-edited file is noticed.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// PIN attempts a fresh key allows, as CTAP keys do.
pub const PIN_RETRIES: u8 = 8;

/// The credential algorithms the soft key can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256, COSE -7.
    Es256,
    /// Ed25519, COSE -8.
    Ed25519,
}

impl Algorithm {
    /// The COSE algorithm id.
    pub fn cose(self) -> i32 {
        match self {
            Algorithm::Es256 => -7,
            Algorithm::Ed25519 => -8,
        }
    }

    /// The name in the state file and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "es256",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// Parses [`Algorithm::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "es256" => Some(Algorithm::Es256),
            "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

/// How the signature counter moves at each operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterMode {
    /// Up by one: an honest key.
    #[default]
    Increment,
    /// The same value as the last operation: a replay or a clone.
    Repeat,
    /// Down by one (0 stays 0): a clone that fell behind.
    Rollback,
}

impl CounterMode {
    /// Parses the state file's name of a mode.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "increment" => Some(CounterMode::Increment),
            "repeat" => Some(CounterMode::Repeat),
            "rollback" => Some(CounterMode::Rollback),
            _ => None,
        }
    }
}

/// One credential the key made.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftCredential {
    /// The relying party it was made for.
    pub rp_id: String,
    /// Its id (32 to 64 random bytes).
    #[serde(with = "hex_bytes")]
    pub credential_id: Vec<u8>,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// The private key: the P-256 scalar or the Ed25519 seed, 32 bytes.
    #[serde(with = "secret_hex")]
    pub private_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SoftCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftCredential")
            .field("rp_id", &self.rp_id)
            .field("credential_id", &hex(&self.credential_id))
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Everything the soft key keeps, including the knobs a test turns.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftKeyState {
    /// The model id put in attested credential data.
    #[serde(with = "aaguid_hex")]
    pub aaguid: [u8; 16],
    /// The signature counter as last reported (global to all credentials).
    #[serde(default)]
    pub counter: u32,
    /// The PIN; `None`: the key has none (it cannot verify the user).
    #[serde(default, with = "secret_string")]
    pub pin: Option<Zeroizing<String>>,
    /// Wrong PINs left before the key blocks it; a right one resets it.
    #[serde(default = "default_pin_retries")]
    pub pin_retries: u8,
    /// `false`: as if unplugged (every operation: `NoDevice`).
    #[serde(default = "default_true")]
    pub present: bool,
    /// Leave the UP (user present) flag out of authenticatorData.
    #[serde(default)]
    pub omit_up: bool,
    /// Leave the UV (user verified) flag out even after a right PIN.
    #[serde(default)]
    pub omit_uv: bool,
    /// How the counter moves.
    #[serde(default)]
    pub counter_mode: CounterMode,
    /// Sign with the hash of another relying party id than the one asked for.
    #[serde(default)]
    pub wrong_rp_id: bool,
    /// Nobody touches the key: every operation ends in `Timeout` (after the PIN, if asked).
    #[serde(default)]
    pub decline: bool,
    /// The only algorithm the key makes new credentials with; a registration must list it.
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// What it made, oldest first.
    #[serde(default)]
    pub credentials: Vec<SoftCredential>,
}

fn default_true() -> bool {
    true
}

fn default_pin_retries() -> u8 {
    PIN_RETRIES
}

fn default_algorithm() -> Algorithm {
    Algorithm::Es256
}

impl std::fmt::Debug for SoftKeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftKeyState")
            .field("aaguid", &hex(&self.aaguid))
            .field("counter", &self.counter)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .field("pin_retries", &self.pin_retries)
            .field("present", &self.present)
            .field("omit_up", &self.omit_up)
            .field("omit_uv", &self.omit_uv)
            .field("counter_mode", &self.counter_mode)
            .field("wrong_rp_id", &self.wrong_rp_id)
            .field("decline", &self.decline)
            .field("algorithm", &self.algorithm)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl SoftKeyState {
    /// A fresh key: present, honest, no PIN, no credentials.
    pub fn new(aaguid: [u8; 16], algorithm: Algorithm) -> Self {
        SoftKeyState {
            aaguid,
            counter: 0,
            pin: None,
            pin_retries: PIN_RETRIES,
            present: true,
            omit_up: false,
            omit_uv: false,
            counter_mode: CounterMode::Increment,
            wrong_rp_id: false,
            decline: false,
            algorithm,
            credentials: Vec::new(),
        }
    }

    /// Parses the state file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The state file's text.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| e.to_string())
    }

    /// The state as JSON without secrets: credentials without private keys, `pin_set`
    /// instead of the PIN. What `softkey show` prints.
    pub fn public_json(&self) -> serde_json::Value {
        let credentials: Vec<serde_json::Value> = self
            .credentials
            .iter()
            .map(|c| {
                serde_json::json!({
                    "rp_id": c.rp_id,
                    "credential_id": hex(&c.credential_id),
                    "algorithm": c.algorithm,
                })
            })
            .collect();
        serde_json::json!({
            "aaguid": hex(&self.aaguid),
            "counter": self.counter,
            "pin_set": self.pin.is_some(),
            "pin_retries": self.pin_retries,
            "present": self.present,
            "omit_up": self.omit_up,
            "omit_uv": self.omit_uv,
            "counter_mode": self.counter_mode,
            "wrong_rp_id": self.wrong_rp_id,
            "decline": self.decline,
            "algorithm": self.algorithm,
            "credentials": credentials,
        })
    }

    /// Sets a knob from text: `present`, `omit_up`, `omit_uv`, `wrong_rp_id`, `decline`
    /// (`true`/`false`), `counter_mode` (`increment`/`repeat`/`rollback`), `algorithm`
    /// (`es256`/`ed25519`), `pin` (the PIN; empty: none; resets the retries), `counter` (a
    /// number).
    pub fn set_knob(&mut self, knob: &str, value: &str) -> Result<(), crate::SoftKeyError> {
        let bad = || crate::SoftKeyError::Knob(format!("{knob} does not take {value:?}"));
        let flag = || match value {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(bad()),
        };
        match knob {
            "present" => self.present = flag()?,
            "omit_up" => self.omit_up = flag()?,
            "omit_uv" => self.omit_uv = flag()?,
            "wrong_rp_id" => self.wrong_rp_id = flag()?,
            "decline" => self.decline = flag()?,
            "counter_mode" => self.counter_mode = CounterMode::parse(value).ok_or_else(bad)?,
            "algorithm" => self.algorithm = Algorithm::parse(value).ok_or_else(bad)?,
            "counter" => self.counter = value.parse().map_err(|_| bad())?,
            "pin" => {
                self.pin = (!value.is_empty()).then(|| Zeroizing::new(value.to_string()));
                self.pin_retries = PIN_RETRIES;
            }
            _ => {
                return Err(crate::SoftKeyError::Knob(format!(
                    "unknown knob {knob:?} (present, omit_up, omit_uv, counter_mode, \
                     wrong_rp_id, decline, algorithm, pin, counter)"
                )));
            }
        }
        Ok(())
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses hex (either case); `None` on odd length or a non-hex character.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::unhex(&text).ok_or_else(|| D::Error::custom("not a hex byte string"))
    }
}

mod aaguid_hex {
    use serde::{Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        super::hex_bytes::serialize(bytes, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        super::hex_bytes::deserialize(d)?
            .try_into()
            .map_err(|_| D::Error::custom("the AAGUID is not 16 bytes"))
    }
}

mod secret_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(bytes: &Zeroizing<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(super::hex(bytes)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        super::unhex(&text)
            .map(Zeroizing::new)
            .ok_or_else(|| D::Error::custom("the private key is not hex"))
    }
}

mod secret_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(
        pin: &Option<Zeroizing<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match pin {
            Some(p) => s.serialize_some(p.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Zeroizing<String>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Zeroizing::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_secrets() -> SoftKeyState {
        let mut state = SoftKeyState::new([7; 16], Algorithm::Es256);
        state.pin = Some(Zeroizing::new("pin-4711".into()));
        state.credentials.push(SoftCredential {
            rp_id: "example.org".into(),
            credential_id: vec![0xab; 32],
            algorithm: Algorithm::Es256,
            private_key: Zeroizing::new(vec![0x5e; 32]),
        });
        state
    }

    #[test]
    fn json_round_trip_keeps_everything() {
        let state = state_with_secrets();
        let text = state.to_json().unwrap();
        let back = SoftKeyState::from_json(&text).unwrap();
        assert_eq!(back.to_json().unwrap(), text);
        assert_eq!(back.pin.as_deref().map(String::as_str), Some("pin-4711"));
        assert_eq!(*back.credentials[0].private_key, vec![0x5e; 32]);
        assert!(text.contains("\"counter_mode\": \"increment\""), "{text}");
        assert!(text.contains("\"algorithm\": \"es256\""), "{text}");
    }

    #[test]
    fn missing_fields_take_defaults_and_unknown_ones_are_refused() {
        let state =
            SoftKeyState::from_json(r#"{"aaguid": "00000000000000000000000000000000"}"#).unwrap();
        assert!(state.present);
        assert_eq!(state.pin_retries, PIN_RETRIES);
        assert_eq!(state.algorithm, Algorithm::Es256);
        assert!(
            SoftKeyState::from_json(
                r#"{"aaguid": "00000000000000000000000000000000", "omit_pu": true}"#
            )
            .is_err()
        );
        assert!(SoftKeyState::from_json(r#"{"aaguid": "0000"}"#).is_err());
        assert!(
            SoftKeyState::from_json(r#"{"aaguid": "zz000000000000000000000000000000"}"#).is_err()
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_and_show() {
        let state = state_with_secrets();
        let debug = format!("{state:?}");
        assert!(!debug.contains("pin-4711"), "{debug}");
        assert!(!debug.contains("5e5e"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let shown = state.public_json().to_string();
        assert!(!shown.contains("pin-4711"), "{shown}");
        assert!(!shown.contains("5e5e"), "{shown}");
        assert!(!shown.contains("private_key"), "{shown}");
        assert!(shown.contains("\"pin_set\":true"), "{shown}");
        assert!(shown.contains(&"ab".repeat(32)), "{shown}");
    }

    #[test]
    fn knobs_parse_and_refuse() {
        let mut state = SoftKeyState::new([0; 16], Algorithm::Es256);
        for (knob, value) in [
            ("present", "false"),
            ("omit_up", "true"),
            ("omit_uv", "1"),
            ("wrong_rp_id", "yes"),
            ("decline", "true"),
            ("counter_mode", "repeat"),
            ("algorithm", "ed25519"),
            ("counter", "41"),
            ("pin", "1234"),
        ] {
            state.set_knob(knob, value).unwrap();
        }
        assert!(!state.present && state.omit_up && state.omit_uv && state.wrong_rp_id);
        assert!(state.decline);
        assert_eq!(state.counter_mode, CounterMode::Repeat);
        assert_eq!(state.algorithm, Algorithm::Ed25519);
        assert_eq!(state.counter, 41);
        assert_eq!(state.pin.as_deref().map(String::as_str), Some("1234"));
        state.pin_retries = 1;
        state.set_knob("pin", "").unwrap();
        assert!(state.pin.is_none());
        assert_eq!(state.pin_retries, PIN_RETRIES);

        assert!(state.set_knob("present", "maybe").is_err());
        assert!(state.set_knob("counter_mode", "sideways").is_err());
        assert!(state.set_knob("counter", "-1").is_err());
        assert!(state.set_knob("colour", "red").is_err());
    }
}
