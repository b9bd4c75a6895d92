//! The factory manifest parser (`workflow::manifest`): any CSV file either validates (and
//! then every row is delivered, as many as validation counted) or is refused with problems.
#![no_main]

use iotc::workflow::manifest::Source;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let source = Source::Csv(file.path().to_path_buf());
    if let Ok(summary) = source.validate() {
        let mut seen = 0u64;
        let scan = source.for_each(|_spec| {
            seen += 1;
            Ok::<(), std::convert::Infallible>(())
        });
        assert!(scan.is_ok(), "a validated manifest must scan");
        assert_eq!(seen, summary.devices, "validate and for_each disagree");
    }
});
