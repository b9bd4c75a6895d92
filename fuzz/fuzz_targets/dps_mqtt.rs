//! The packet path of the emulator's DPS MQTT listener: any byte stream, in any split, is
//! read by `emulator::dps::mqtt::Session` into steps without panicking, a closed session
//! reads nothing more, and every request it yields can be answered.
#![no_main]

use iotc::emulator::dps::mqtt::{Session, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where reads split the stream, as TCP may.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut session = Session::new("0ne00000A0A");
    let mut closed = false;
    for part in data.chunks(chunk) {
        for step in session.feed(part) {
            assert!(!closed, "a step after Close");
            match step {
                Step::Serve(request) => {
                    let _ = session.answer(request.rid(), 202, b"{}", Some(1));
                    let _ = session.answer(request.rid(), 401, b"{}", None);
                }
                Step::Close(_) | Step::End => closed = true,
                Step::Send(_) => {}
            }
        }
    }
    if closed {
        assert!(session.feed(data).is_empty());
    }
});
