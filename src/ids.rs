//! Validated identifiers.
//!
//! Every id the service constrains gets a newtype whose constructor applies the rule of the
//! official spec (or, for registration ids, of the DPS X.509 documentation), so an invalid id
//! is refused with a message at the edge instead of failing somewhere deep in a batch. Ids are
//! never rewritten: `dev:01` stays `dev:01` or is refused, never silently becomes `dev 01`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    /// Which kind of id (for example "registration id").
    pub kind: &'static str,
    /// The refused value.
    pub value: String,
    /// The rule it breaks.
    pub reason: String,
}

fn invalid(kind: &'static str, value: &str, reason: impl Into<String>) -> InvalidId {
    InvalidId {
        kind,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn check_charset(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    allowed_desc: &str,
) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(invalid(kind, value, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(
            kind,
            value,
            format!("longer than {max} characters"),
        ));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(invalid(
            kind,
            value,
            format!("character {c:?} is not allowed (allowed: {allowed_desc})"),
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                let check: fn(&str) -> Result<(), InvalidId> = $check;
                check(&value)?;
                Ok($name(value))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                $name::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, InvalidId> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A DPS registration id, which is also the device id and, for X.509, the leaf CN:
    /// at most 64 characters of letters, digits and `- . _ :`, ending in a letter, digit or `-`.
    RegistrationId,
    "registration id",
    |v| {
        const KIND: &str = "registration id";
        check_charset(
            KIND,
            v,
            64,
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'),
            "letters, digits, - . _ :",
        )?;
        let last = v.chars().last().unwrap_or('-');
        if !(last.is_ascii_alphanumeric() || last == '-') {
            return Err(invalid(KIND, v, "must end in a letter, a digit or '-'"));
        }
        Ok(())
    }
);

id_type!(
    /// An IoT Central device id. The spec puts no pattern on it; we hold it to the
    /// registration-id rule because a provisioned device's id is its registration id.
    DeviceId,
    "device id",
    |v| RegistrationId::new(v).map(|_| ()).map_err(|e| InvalidId { kind: "device id", ..e })
);

id_type!(
    /// An organization id: `^(?!-)[a-z0-9-]{1,48}[a-z0-9]$`, at most 48 characters.
    OrganizationId,
    "organization id",
    |v| {
        const KIND: &str = "organization id";
        check_charset(
            KIND,
            v,
            48,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "lowercase letters, digits, -",
        )?;
        if v.len() < 2 {
            return Err(invalid(KIND, v, "must be at least 2 characters"));
        }
        if v.starts_with('-') || v.ends_with('-') {
            return Err(invalid(KIND, v, "must not start or end with '-'"));
        }
        Ok(())
    }
);

id_type!(
    /// An enrollment group id: `^[a-zA-Z0-9-]*$`, at most 255 characters (no underscore).
    EnrollmentGroupId,
    "enrollment group id",
    |v| check_charset(
        "enrollment group id",
        v,
        255,
        |c| c.is_ascii_alphanumeric() || c == '-',
        "letters, digits, -"
    )
);

id_type!(
    /// A device group id: `^[a-zA-Z0-9_-]*$`, at most 255 characters.
    DeviceGroupId,
    "device group id",
    |v| check_charset(
        "device group id",
        v,
        255,
        |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
        "letters, digits, - _"
    )
);

id_type!(
    /// A user id: `^[a-zA-Z0-9-_]*$`, at most 48 characters.
    UserId,
    "user id",
    |v| check_charset(
        "user id",
        v,
        48,
        |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
        "letters, digits, - _"
    )
);

id_type!(
    /// An API token id. The spec puts no pattern on it; we accept what is safe in a URL path
    /// segment: letters, digits, `- _ .`, at most 128 characters.
    TokenId,
    "API token id",
    |v| check_charset(
        "API token id",
        v,
        128,
        |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
        "letters, digits, - _ ."
    )
);

id_type!(
    /// A DPS ID scope, such as `0ne00000A0A`: letters and digits, at most 32 characters.
    IdScope,
    "ID scope",
    |v| check_charset("ID scope", v, 32, |c| c.is_ascii_alphanumeric(), "letters, digits")
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_id_rules() {
        for ok in ["dev-01", "dev:01", "a.b_c-", "X", &"a".repeat(64)] {
            assert!(RegistrationId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "dev 01",
            "dev.",
            "dev_",
            "dev:",
            "dév",
            &"a".repeat(65),
            "a/b",
        ] {
            let err = RegistrationId::new(bad).unwrap_err();
            assert_eq!(err.kind, "registration id");
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn organization_id_rules() {
        assert!(OrganizationId::new("seattle").is_ok());
        assert!(OrganizationId::new("a1-b2").is_ok());
        for bad in ["Seattle", "-a", "a-", "a", "a_b", &"a".repeat(49)] {
            assert!(OrganizationId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_ids() {
        assert!(EnrollmentGroupId::new("my-group-1").is_ok());
        assert!(EnrollmentGroupId::new("my_group").is_err());
        assert!(DeviceGroupId::new("my_group").is_ok());
        assert!(DeviceId::new("bad id").unwrap_err().kind == "device id");
    }

    #[test]
    fn serde_validates() {
        let ok: RegistrationId = serde_json::from_str("\"dev-1\"").unwrap();
        assert_eq!(ok.as_str(), "dev-1");
        assert!(serde_json::from_str::<RegistrationId>("\"dev 1\"").is_err());
    }
}
