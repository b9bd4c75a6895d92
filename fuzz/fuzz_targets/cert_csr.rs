//! CSR signing input of `crate::cert`: `Authority::sign_csr` on arbitrary PEM or DER bytes
//! either signs a well-formed, self-consistent request or returns a typed error.
#![no_main]

use iotc::cert::{Authority, CaOptions, LeafOptions};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn ca() -> &'static Authority {
    static CA: OnceLock<Authority> = OnceLock::new();
    CA.get_or_init(|| Authority::new_root(&CaOptions::default()).expect("a root CA"))
}

fuzz_target!(|data: &[u8]| {
    let _ = ca().sign_csr(data, &LeafOptions::default());
});
