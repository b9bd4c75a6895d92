//! The device list `filter` and `orderby` parsers of the emulator (preview API): any input
//! is either a typed error or an expression that evaluates without panicking.
#![no_main]

use iotc::central::models::Device;
use iotc::emulator::query::{parse_filter, parse_orderby};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_orderby(text);
    if let Ok(expr) = parse_filter(text) {
        let device: Device = serde_json::from_value(serde_json::json!({
            "id": "dev-1", "displayName": "Dev One", "template": "dtmi:a:b;1",
            "enabled": true, "provisioned": true, "simulated": false,
            "organizations": ["seattle"]
        }))
        .expect("static device");
        let _ = expr.matches(&device);
        let _ = expr.matches(&Device::default());
    }
});
