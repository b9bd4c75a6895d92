//! PKCS#12 input: the device identity loader (`dps::X509Identity::from_pkcs12`) on arbitrary
//! bytes, with the right and a wrong password.
#![no_main]

use iotc::dps::X509Identity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = X509Identity::from_pkcs12(data, "pw");
    let _ = X509Identity::from_pkcs12(data, "");
});
