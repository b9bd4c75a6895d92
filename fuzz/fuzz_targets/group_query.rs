//! The device-group query parser (`SELECT * FROM devices WHERE ...`) of the emulator: any
//! input is either a typed error or an expression that evaluates without panicking.
#![no_main]

use iotc::central::models::Device;
use iotc::emulator::query::parse_group_query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(expr) = parse_group_query(text) {
        let device: Device = serde_json::from_value(serde_json::json!({
            "id": "dev-1", "displayName": "Dev One", "template": "dtmi:a:b;1",
            "enabled": true, "provisioned": false, "simulated": false,
            "organizations": ["seattle"]
        }))
        .expect("static device");
        let _ = expr.matches(&device);
        let _ = expr.matches(&Device::default());
    }
});
