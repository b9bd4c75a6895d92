//! Certificate and key input of `crate::cert`: PEM/DER certificate files, the IoT Central
//! certificate string, certificate inspection, and PEM private keys (plain and encrypted).
#![no_main]

use iotc::cert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ders) = cert::parse_pem_certs(data) {
        for der in ders.iter().take(4) {
            let _ = cert::inspect(der);
        }
    }
    if let Ok(ders) = cert::read_certs(data) {
        for der in ders.iter().take(4) {
            let _ = cert::inspect(der);
        }
    }
    let _ = cert::inspect(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(der) = cert::decode_certificate_string(text) {
            let _ = cert::inspect(&der);
        }
        let _ = cert::PrivateKey::from_pem(text, None);
        let _ = cert::PrivateKey::from_pem(text, Some("pw"));
    }
    let _ = cert::PrivateKey::from_pkcs8_der(data);
});
