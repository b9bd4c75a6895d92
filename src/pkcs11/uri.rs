//! RFC 7512 PKCS#11 URIs: the one name of a token key that every command takes.
//!
//! `pkcs11:token=line-1;object=line-1-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin`
//! names the module, the token (by label, serial, manufacturer, model or slot id), the key (by
//! label and/or id) and where the PIN comes from. Values are percent-decoded; an attribute
//! given twice, an unknown attribute and one iotc cannot honour are refused, never ignored,
//! because a URI that silently matched more than it says could sign with the wrong key.
//!
//! `pin-value` is refused: a URI travels on command lines (`--ca-key`, `--key-store`) and in
//! `PREFIX_key.uri` files, and a PIN is never on a plain flag nor in a file that is not the PIN
//! file. The PIN comes from `pin-source=file:PATH` or `IOTC_PKCS11_PIN` instead. The error that
//! refuses it names the attribute, never its value.
//!
//! Written here rather than taken from crates.io: `pk11-uri-parser` returns the values still
//! percent-encoded, prints warnings to stdout in debug builds and repeats the whole URI (a
//! `pin-value` included) in its errors; `pkcs11-uri` pulls in a second PKCS#11 binding. The
//! grammar is small and `percent-encoding` does the decoding.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::Pkcs11Error;

/// The URI scheme prefix.
pub const SCHEME: &str = "pkcs11:";

/// RFC 7512 `pk11-pchar`/`pk11-qchar` minus what must be escaped in a value we print.
const VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b';')
    .add(b'?')
    .add(b'&')
    .add(b'/')
    .add(b'=')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Paths keep their `/` when printed.
const PATH_VALUE: &AsciiSet = &VALUE.remove(b'/');

/// A parsed PKCS#11 URI naming one private key in one token. Never holds a PIN.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KeyUri {
    token: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    serial: Option<String>,
    slot_id: Option<u64>,
    object: Option<String>,
    id: Option<Vec<u8>>,
    module_path: Option<PathBuf>,
    pin_source: Option<PathBuf>,
}

fn invalid(reason: impl Into<String>) -> Pkcs11Error {
    Pkcs11Error::InvalidUri {
        reason: reason.into(),
    }
}

fn decode(name: &str, raw: &str) -> Result<Vec<u8>, Pkcs11Error> {
    // A '%' not followed by two hex digits is kept as is by percent-encoding; RFC 7512
    // makes it an error.
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit())
        {
            return Err(invalid(format!(
                "attribute {name}: '%' must start a percent-encoded byte (%XX)"
            )));
        }
    }
    Ok(percent_decode_str(raw).collect())
}

fn text(name: &str, raw: &str) -> Result<String, Pkcs11Error> {
    String::from_utf8(decode(name, raw)?)
        .map_err(|_| invalid(format!("attribute {name} is not UTF-8 once decoded")))
}

fn set<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), Pkcs11Error> {
    if slot.is_some() {
        return Err(invalid(format!("attribute {name} is given twice")));
    }
    *slot = Some(value);
    Ok(())
}

impl KeyUri {
    /// The token label (`token=`).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The token serial number (`serial=`).
    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }

    /// The token manufacturer (`manufacturer=`).
    pub fn manufacturer(&self) -> Option<&str> {
        self.manufacturer.as_deref()
    }

    /// The token model (`model=`).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The slot id (`slot-id=`).
    pub fn slot_id(&self) -> Option<u64> {
        self.slot_id
    }

    /// The key's label (`object=`).
    pub fn object(&self) -> Option<&str> {
        self.object.as_deref()
    }

    /// The key's CKA_ID (`id=`), decoded bytes.
    pub fn id(&self) -> Option<&[u8]> {
        self.id.as_deref()
    }

    /// The PKCS#11 module (`module-path=`).
    pub fn module_path(&self) -> Option<&Path> {
        self.module_path.as_deref()
    }

    /// The file whose first line is the PIN (`pin-source=file:PATH`).
    pub fn pin_source(&self) -> Option<&Path> {
        self.pin_source.as_deref()
    }

    /// A short human name of the key: `object line-1-ca in token line-1`.
    pub fn describe(&self) -> String {
        let key = match (&self.object, &self.id) {
            (Some(o), _) => format!("object {o:?}"),
            (None, Some(id)) => format!("object with id {}", hex(id)),
            (None, None) => "the only private key".to_owned(),
        };
        let token = match (&self.token, &self.serial, self.slot_id) {
            (Some(t), _, _) => format!("token {t:?}"),
            (None, Some(s), _) => format!("token with serial {s:?}"),
            (None, None, Some(id)) => format!("the token in slot {id}"),
            (None, None, None) => "the only token".to_owned(),
        };
        format!("{key} in {token}")
    }

    /// This URI with its PIN read from `path` (`pin-source=file:PATH`).
    pub fn with_pin_source(&self, path: &Path) -> KeyUri {
        KeyUri {
            pin_source: Some(path.to_owned()),
            ..self.clone()
        }
    }

    /// This URI without `module-path=` (for a consumer configured with the module otherwise).
    pub fn without_module(&self) -> KeyUri {
        KeyUri {
            module_path: None,
            ..self.clone()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FromStr for KeyUri {
    type Err = Pkcs11Error;

    fn from_str(s: &str) -> Result<KeyUri, Pkcs11Error> {
        let s = s.trim();
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("a PKCS#11 URI starts with \"pkcs11:\""))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = KeyUri::default();
        // Refuse a PIN before anything could echo a value.
        if let Some(q) = query {
            if q.split('&')
                .any(|a| a.split_once('=').map(|(n, _)| n) == Some("pin-value"))
            {
                return Err(Pkcs11Error::PinInUri);
            }
        }
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("path attribute {attr:?} has no '='")))?;
            match name {
                "token" => set(&mut uri.token, name, text(name, raw)?)?,
                "manufacturer" => set(&mut uri.manufacturer, name, text(name, raw)?)?,
                "model" => set(&mut uri.model, name, text(name, raw)?)?,
                "serial" => set(&mut uri.serial, name, text(name, raw)?)?,
                "object" => set(&mut uri.object, name, text(name, raw)?)?,
                "id" => set(&mut uri.id, name, decode(name, raw)?)?,
                "slot-id" => {
                    let v = text(name, raw)?;
                    let n = v.parse::<u64>().map_err(|_| {
                        invalid(format!("slot-id {v:?} is not a decimal number"))
                    })?;
                    set(&mut uri.slot_id, name, n)?;
                }
                "type" => {
                    let v = text(name, raw)?;
                    if v != "private" {
                        return Err(invalid(format!(
                            "type={v}: iotc signs with private keys only (type=private)"
                        )));
                    }
                }
                "library-manufacturer" | "library-description" | "library-version"
                | "slot-description" | "slot-manufacturer" => {
                    return Err(invalid(format!(
                        "attribute {name} is not supported; name the token by token=, serial= or slot-id="
                    )))
                }
                other => return Err(invalid(format!("unknown path attribute {other:?}"))),
            }
        }
        for attr in query.into_iter().flat_map(|q| q.split('&')) {
            if attr.is_empty() {
                continue;
            }
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("query attribute {attr:?} has no '='")))?;
            match name {
                "module-path" => {
                    let v = text(name, raw)?;
                    if v.is_empty() {
                        return Err(invalid("module-path is empty"));
                    }
                    set(&mut uri.module_path, name, PathBuf::from(v))?;
                }
                "pin-source" => {
                    let v = text(name, raw)?;
                    let path = v.strip_prefix("file:").ok_or_else(|| {
                        invalid("pin-source must be a file: URI (pin-source=file:/path/to/pin)")
                    })?;
                    // file:///abs and file:/abs both name /abs.
                    let path = path.strip_prefix("//").unwrap_or(path);
                    if path.is_empty() {
                        return Err(invalid("pin-source names no file"));
                    }
                    set(&mut uri.pin_source, name, PathBuf::from(path))?;
                }
                "module-name" => {
                    return Err(invalid(
                        "module-name is not supported; give module-path= or set IOTC_PKCS11_MODULE",
                    ))
                }
                other => return Err(invalid(format!("unknown query attribute {other:?}"))),
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(invalid(
                "the URI names no key: give object=LABEL (and/or id=%XX...)",
            ));
        }
        Ok(uri)
    }
}

/// The canonical form: path attributes in a fixed order, values percent-encoded. Holds no
/// PIN (none can be parsed), so it is safe to print and to write to `PREFIX_key.uri`.
impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCHEME)?;
        let mut path: Vec<String> = Vec::new();
        let mut push = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                path.push(format!("{name}={}", utf8_percent_encode(v, VALUE)));
            }
        };
        push("token", &self.token);
        push("manufacturer", &self.manufacturer);
        push("model", &self.model);
        push("serial", &self.serial);
        push("object", &self.object);
        if let Some(slot) = self.slot_id {
            path.push(format!("slot-id={slot}"));
        }
        if let Some(id) = &self.id {
            let enc: String = id.iter().map(|b| format!("%{b:02X}")).collect();
            path.push(format!("id={enc}"));
        }
        f.write_str(&path.join(";"))?;
        let mut query = Vec::new();
        if let Some(m) = &self.module_path {
            query.push(format!(
                "module-path={}",
                utf8_percent_encode(&m.to_string_lossy(), PATH_VALUE)
            ));
        }
        if let Some(p) = &self.pin_source {
            query.push(format!(
                "pin-source=file:{}",
                utf8_percent_encode(&p.to_string_lossy(), PATH_VALUE)
            ));
        }
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyUri({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_examples_and_decodes_values() {
        let u: KeyUri = "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-key;type=private;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin"
            .parse()
            .unwrap();
        assert_eq!(u.token(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer(), Some("Snake Oil, Inc."));
        assert_eq!(u.model(), Some("1.0"));
        assert_eq!(u.serial(), Some(""));
        assert_eq!(u.object(), Some("my-key"));
        assert_eq!(
            u.id(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(u.pin_source(), Some(Path::new("/etc/token_pin")));
        let u: KeyUri = "pkcs11:slot-id=3;object=a?module-path=/usr/lib/softhsm/libsofthsm2.so"
            .parse()
            .unwrap();
        assert_eq!(u.slot_id(), Some(3));
        assert_eq!(
            u.module_path(),
            Some(Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "pkcs11:token=line%201;object=line-1-ca",
            "pkcs11:token=t;object=k;id=%01%FF?module-path=/usr/lib/x.so&pin-source=file:/run/pin",
            "pkcs11:serial=abc;object=k;slot-id=7",
        ] {
            let u: KeyUri = s.parse().unwrap();
            let again: KeyUri = u.to_string().parse().unwrap();
            assert_eq!(u, again, "{s} -> {u}");
        }
        let u: KeyUri = "pkcs11:object=a;token=t".parse().unwrap();
        assert_eq!(u.to_string(), "pkcs11:token=t;object=a");
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (s, want) in [
            ("token=t;object=a", "starts with"),
            ("pkcs11:token=t", "names no key"),
            ("pkcs11:token=t;token=u;object=a", "given twice"),
            (
                "pkcs11:token=t;object=a;colour=red",
                "unknown path attribute",
            ),
            ("pkcs11:object=a?foo=bar", "unknown query attribute"),
            ("pkcs11:object=a;type=cert", "type=cert"),
            ("pkcs11:object=a;slot-id=x", "not a decimal"),
            ("pkcs11:object=a%2", "percent-encoded"),
            ("pkcs11:object=a%zz", "percent-encoded"),
            ("pkcs11:object=a?pin-source=/etc/pin", "file: URI"),
            ("pkcs11:object=a?module-name=softhsm2", "module-name"),
            ("pkcs11:object=a;slot-description=x", "not supported"),
            ("pkcs11:object", "has no '='"),
        ] {
            let err = s.parse::<KeyUri>().unwrap_err().to_string();
            assert!(err.contains(want), "{s}: {err}");
        }
    }

    #[test]
    fn a_pin_value_is_refused_without_echoing_it() {
        let err = "pkcs11:token=t;object=a?pin-value=s3cr3t-1234"
            .parse::<KeyUri>()
            .unwrap_err();
        assert!(matches!(err, Pkcs11Error::PinInUri), "{err}");
        let msg = format!("{err} {err:?}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
        assert!(msg.contains("IOTC_PKCS11_PIN"), "{msg}");
    }
}
