//! Symmetric-key attestation: group-key derivation, SAS token signing (device side) and SAS
//! token verification (the emulator's side).
//!
//! Both sides live here so they are two readings of one rule: the signature is
//! `base64(HMAC-SHA256(base64decode(device key), sr + "\n" + se))` where `sr` is the
//! resource URI **exactly as it appears in the token** (URL-encoded or not), `se` the expiry
//! in seconds since the epoch, and `skn`, when present, `registration` (API-NOTES.md §6).
//! Tokens without `skn` are accepted as the service accepts them: the embedded SDKs send
//! none (Azure/azure-sdk-for-c `az_iot_provisioning_client_sas_get_password` appends `skn`
//! only for a key name, and its DPS samples and the FreeRTOS middleware give `AZ_SPAN_EMPTY`).

use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The only key name DPS's device API accepts.
pub const KEY_NAME: &str = "registration";

/// Why a key could not be derived, a token made, or a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasError {
    /// A key is not valid base64 (or is empty). The key itself is never shown.
    #[error("the {what} is not valid base64 (or is empty)")]
    DecodeKey {
        /// Which key ("group key", "device key").
        what: &'static str,
    },
    /// The Authorization header is not a `SharedAccessSignature ...` token.
    #[error("the Authorization header is not a SharedAccessSignature token")]
    ParseToken,
    /// A field of the token is missing or repeated.
    #[error("the SAS token field `{0}` is missing or repeated")]
    MissingField(&'static str),
    /// `se` is not a decimal number of seconds.
    #[error("the SAS token expiry `se` is not a number of seconds")]
    ParseExpiry,
    /// `sig` is not URL-encoded base64.
    #[error("the SAS token signature `sig` is not base64")]
    ParseSignature,
    /// `skn` is present but not `registration`.
    #[error(
        "the SAS token key name `skn` is {0:?}; the device API takes only \"registration\" (or no `skn`)"
    )]
    KeyName(String),
    /// `sr` does not name the request's scope and registration id.
    #[error("the SAS token resource `sr` ({sr:?}) does not match the request ({expected:?})")]
    WrongResource {
        /// `sr` as decoded.
        sr: String,
        /// `{idScope}/registrations/{registrationId}` of the request.
        expected: String,
    },
    /// `se` is in the past.
    #[error("the SAS token expired at {expiry} (seconds since the epoch; now {now})")]
    Expired {
        /// `se`.
        expiry: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// No candidate key produces this signature.
    #[error("the SAS token signature does not match the registration's key")]
    BadSignature,
}

/// Derives a device key from an enrollment group key:
/// `base64(HMAC-SHA256(base64decode(group key), UTF-8(registration id)))`.
///
/// ```
/// let key = iotc::dps::derive_device_key(
///     "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
///     "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
/// ).unwrap();
/// assert_eq!(key.expose(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
/// ```
pub fn derive_device_key(group_key_b64: &str, registration_id: &str) -> Result<Secret, SasError> {
    let key = decode_key(group_key_b64, "group key")?;
    Ok(Secret::new(
        B64.encode(hmac(&key, registration_id.as_bytes())),
    ))
}

/// The resource URI `{idScope}/registrations/{registrationId}`, URL-encoded with lowercase
/// hex (`0ne00000A0A%2fregistrations%2fdev-1`), as the DPS documentation's text asks.
pub fn resource_uri(id_scope: &str, registration_id: &str) -> String {
    encode_lower(&format!("{id_scope}/registrations/{registration_id}"))
}

/// Signs a SAS token for the device API:
/// `SharedAccessSignature sr={resource}&sig={sig}&se={expiry}&skn=registration`.
///
/// `device_key_b64` is the device's own key (derive it first for a group enrollment);
/// `expiry_unix` is in seconds since the epoch.
pub fn sas_token(
    id_scope: &str,
    registration_id: &str,
    device_key_b64: &Secret,
    expiry_unix: u64,
) -> Result<Secret, SasError> {
    let sr = resource_uri(id_scope, registration_id);
    sign_with_resource(&sr, device_key_b64, expiry_unix)
}

/// Signs a token over a resource string used verbatim (for tests of the raw and `%2F`
/// encodings other SDKs send).
pub fn sign_with_resource(
    sr: &str,
    device_key_b64: &Secret,
    expiry_unix: u64,
) -> Result<Secret, SasError> {
    let key = decode_key(device_key_b64.expose(), "device key")?;
    let sig = B64.encode(hmac(&key, format!("{sr}\n{expiry_unix}").as_bytes()));
    let sig = percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC);
    Ok(Secret::new(format!(
        "SharedAccessSignature sr={sr}&sig={sig}&se={expiry_unix}&skn={KEY_NAME}"
    )))
}

/// A SAS token read from an `Authorization` header, not yet verified.
#[derive(Clone)]
pub struct ParsedSas {
    sr: String,
    signature: Vec<u8>,
    expiry: u64,
}

impl std::fmt::Debug for ParsedSas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedSas")
            .field("sr", &self.sr)
            .field("signature", &"[elided]")
            .field("expiry", &self.expiry)
            .finish()
    }
}

impl ParsedSas {
    /// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=registration]` (fields in any
    /// order; `skn` may be left out, a present one must be `registration`).
    pub fn parse(header: &str) -> Result<ParsedSas, SasError> {
        let rest = header
            .trim()
            .strip_prefix("SharedAccessSignature")
            .filter(|r| r.starts_with(' '))
            .ok_or(SasError::ParseToken)?
            .trim_start();
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for part in rest.split('&') {
            let (name, value) = part.split_once('=').ok_or(SasError::ParseToken)?;
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SasError::MissingField(field_name(name)));
            }
        }
        let sr = sr.ok_or(SasError::MissingField("sr"))?;
        let sig = sig.ok_or(SasError::MissingField("sig"))?;
        let se = se.ok_or(SasError::MissingField("se"))?;
        if let Some(skn) = skn.filter(|k| *k != KEY_NAME) {
            return Err(SasError::KeyName(skn.to_owned()));
        }
        if se.is_empty() || !se.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SasError::ParseExpiry);
        }
        let expiry = se.parse::<u64>().map_err(|_| SasError::ParseExpiry)?;
        let sig = percent_encoding::percent_decode_str(sig)
            .decode_utf8()
            .map_err(|_| SasError::ParseSignature)?;
        let signature = B64
            .decode(sig.as_bytes())
            .map_err(|_| SasError::ParseSignature)?;
        Ok(ParsedSas {
            sr: sr.to_owned(),
            signature,
            expiry,
        })
    }

    /// `sr` exactly as received.
    pub fn resource(&self) -> &str {
        &self.sr
    }

    /// `se`, seconds since the epoch.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// Checks that `sr`, once percent-decoded, is `{idScope}/registrations/{registrationId}`
    /// of the request (the scope compared without regard to case). Raw, `%2f` and `%2F`
    /// spellings are all accepted.
    pub fn check_resource(&self, id_scope: &str, registration_id: &str) -> Result<(), SasError> {
        let expected = format!("{id_scope}/registrations/{registration_id}");
        let decoded = percent_encoding::percent_decode_str(&self.sr)
            .decode_utf8_lossy()
            .into_owned();
        let ok = match decoded.split_once('/') {
            Some((scope, rest)) => {
                scope.eq_ignore_ascii_case(id_scope)
                    && rest == format!("registrations/{registration_id}")
            }
            None => false,
        };
        if ok {
            Ok(())
        } else {
            Err(SasError::WrongResource {
                sr: decoded,
                expected,
            })
        }
    }

    /// Refuses a token whose `se` is not after `now_unix`.
    pub fn check_expiry(&self, now_unix: u64) -> Result<(), SasError> {
        if self.expiry <= now_unix {
            Err(SasError::Expired {
                expiry: self.expiry,
                now: now_unix,
            })
        } else {
            Ok(())
        }
    }

    /// Whether `device_key_b64` signed this token (constant-time comparison). A key that is
    /// not base64 simply does not match.
    pub fn signed_by(&self, device_key_b64: &str) -> bool {
        let Ok(key) = decode_key(device_key_b64, "device key") else {
            return false;
        };
        let Ok(mut mac) = HmacSha256::new_from_slice(&key) else {
            return false;
        };
        mac.update(format!("{}\n{}", self.sr, self.expiry).as_bytes());
        mac.verify_slice(&self.signature).is_ok()
    }

    /// Full check against the request and a list of candidate device keys: resource,
    /// expiry, then signature. Returns the index of the key that signed the token.
    pub fn verify(
        &self,
        id_scope: &str,
        registration_id: &str,
        candidate_keys: &[&str],
        now_unix: u64,
    ) -> Result<usize, SasError> {
        self.check_resource(id_scope, registration_id)?;
        self.check_expiry(now_unix)?;
        candidate_keys
            .iter()
            .position(|k| self.signed_by(k))
            .ok_or(SasError::BadSignature)
    }
}

fn field_name(name: &str) -> &'static str {
    match name {
        "sr" => "sr",
        "sig" => "sig",
        "se" => "se",
        _ => "skn",
    }
}

fn decode_key(b64: &str, what: &'static str) -> Result<Vec<u8>, SasError> {
    match B64.decode(b64.trim().as_bytes()) {
        Ok(k) if !k.is_empty() => Ok(k),
        _ => Err(SasError::DecodeKey { what }),
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
    };
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Percent-encodes everything but unreserved characters, with lowercase hex digits.
fn encode_lower(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP_KEY: &str =
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

    #[test]
    fn published_derivation_vector() {
        let k = derive_device_key(GROUP_KEY, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6").unwrap();
        assert_eq!(k.expose(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
        assert_eq!(
            derive_device_key("not base64!", "x").unwrap_err(),
            SasError::DecodeKey { what: "group key" }
        );
    }

    #[test]
    fn token_shape_and_round_trip() {
        let key = derive_device_key(GROUP_KEY, "dev:1").unwrap();
        let tok = sas_token("0ne00000A0A", "dev:1", &key, 2_000_000_000).unwrap();
        let t = tok.expose();
        assert!(
            t.starts_with("SharedAccessSignature sr=0ne00000A0A%2fregistrations%2fdev%3a1&sig="),
            "{t}"
        );
        assert!(t.ends_with("&se=2000000000&skn=registration"), "{t}");
        let p = ParsedSas::parse(t).unwrap();
        assert_eq!(
            p.verify(
                "0ne00000A0A",
                "dev:1",
                &["AAAA", key.expose()],
                1_700_000_000
            ),
            Ok(1)
        );
    }

    #[test]
    fn all_three_encodings_verify_against_the_raw_sr() {
        let key = Secret::new(B64.encode([7u8; 32]));
        for sr in [
            "0ne00000A0A/registrations/dev-1",
            "0ne00000A0A%2fregistrations%2fdev-1",
            "0ne00000A0A%2Fregistrations%2Fdev-1",
        ] {
            let tok = sign_with_resource(sr, &key, 2_000_000_000).unwrap();
            let p = ParsedSas::parse(tok.expose()).unwrap();
            assert_eq!(p.resource(), sr);
            assert_eq!(
                p.verify("0ne00000A0A", "dev-1", &[key.expose()], 1),
                Ok(0),
                "{sr}"
            );
            // Signing over a differently encoded sr than the one sent must fail.
            let other = if sr.contains('/') {
                "0ne00000A0A%2fregistrations%2fdev-1"
            } else {
                "0ne00000A0A/registrations/dev-1"
            };
            let forged = sign_with_resource(other, &key, 2_000_000_000).unwrap();
            let forged_sig = forged.expose().split("&sig=").nth(1).unwrap();
            let spliced = format!("SharedAccessSignature sr={sr}&sig={forged_sig}");
            let p = ParsedSas::parse(&spliced).unwrap();
            assert_eq!(
                p.verify("0ne00000A0A", "dev-1", &[key.expose()], 1),
                Err(SasError::BadSignature)
            );
        }
    }

    #[test]
    fn refusals() {
        let key = Secret::new(B64.encode([9u8; 32]));
        let tok = sas_token("scope1", "dev-1", &key, 100).unwrap();
        let p = ParsedSas::parse(tok.expose()).unwrap();
        assert!(matches!(
            p.verify("scope1", "dev-1", &[key.expose()], 100),
            Err(SasError::Expired { expiry: 100, .. })
        ));
        assert!(matches!(
            p.verify("scope1", "dev-2", &[key.expose()], 1),
            Err(SasError::WrongResource { .. })
        ));
        assert_eq!(
            p.verify("scope1", "dev-1", &[&B64.encode([1u8; 32])], 1),
            Err(SasError::BadSignature)
        );
        // tampered expiry
        let tampered = tok.expose().replace("se=100", "se=999999999999");
        let p = ParsedSas::parse(&tampered).unwrap();
        assert_eq!(
            p.verify("scope1", "dev-1", &[key.expose()], 1),
            Err(SasError::BadSignature)
        );
        assert_eq!(
            ParsedSas::parse("Bearer abc").unwrap_err(),
            SasError::ParseToken
        );
        assert_eq!(
            ParsedSas::parse("SharedAccessSignature sr=a&sig=AAAA&se=1&skn=owner").unwrap_err(),
            SasError::KeyName("owner".into())
        );
        assert_eq!(
            ParsedSas::parse("SharedAccessSignature sr=a&sig=AAAA&skn=registration").unwrap_err(),
            SasError::MissingField("se")
        );
        assert_eq!(
            ParsedSas::parse("SharedAccessSignature sr=a&sig=AAAA&se=1&skn=registration&skn=x")
                .unwrap_err(),
            SasError::MissingField("skn")
        );
        assert_eq!(
            ParsedSas::parse("SharedAccessSignature sr=a&sig=AAAA&se=-1&skn=registration")
                .unwrap_err(),
            SasError::ParseExpiry
        );
    }

    #[test]
    fn a_token_without_skn_verifies_like_one_with_it() {
        let key = Secret::new(B64.encode([5u8; 32]));
        let with = sas_token("scope1", "dev-1", &key, 2_000_000_000).unwrap();
        let without = with.expose().replace("&skn=registration", "");
        assert!(!without.contains("skn"), "{without}");
        let p = ParsedSas::parse(&without).unwrap();
        assert_eq!(p.verify("scope1", "dev-1", &[key.expose()], 1), Ok(0));
        // `skn` is not signed, so leaving it out must not weaken the signature check.
        let other = Secret::new(B64.encode([6u8; 32]));
        assert_eq!(
            p.verify("scope1", "dev-1", &[other.expose()], 1),
            Err(SasError::BadSignature)
        );
    }

    #[test]
    fn debug_never_shows_signature() {
        let key = Secret::new(B64.encode([3u8; 32]));
        let tok = sas_token("s", "d", &key, 5).unwrap();
        assert_eq!(format!("{tok:?}"), "[secret elided]");
        let p = ParsedSas::parse(tok.expose()).unwrap();
        assert!(format!("{p:?}").contains("[elided]"));
    }
}
