//! A reader that closes the pipe early (`iotc ... | head -1`) is not an error: the command
//! ends with exit code 0 and prints no panic.

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_pipe_ends_quietly_with_success() {
    // `completions bash` prints well over a pipe buffer (Linux's default capacity: 16 pages,
    // 64 KiB), so it is still writing when the reader goes away and must hit the closed pipe.
    let whole = Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(whole.status.success());
    assert!(
        whole.stdout.len() > 2 * 64 * 1024,
        "the output ({} bytes) must outgrow the pipe",
        whole.stdout.len()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}
