//! The global `--output json` reaches every `iotc cert` command that prints: stdout is one
//! JSON document (and nothing else), errors stay on stderr, and a failed `verify` still
//! answers its JSON report before exiting 2.

use crate::common_cert;
use common_cert::*;
use serde_json::Value;

/// Runs `iotc --output json ARGS` and parses the whole of stdout as one JSON document.
#[track_caller]
fn json(dir: &std::path::Path, args: &str) -> Value {
    let mut v = words("--output json");
    v.extend(words(args));
    let r = iotc(dir, &v).ok();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout of {args:?} is not one JSON document ({e}):\n{}",
            r.stdout
        )
    })
}

#[test]
fn every_cert_command_prints_one_json_document() {
    let d = workdir();
    let dir = d.path();
    let r = json(dir, "cert root --name root --out c --no-password");
    assert_eq!(r["subject"], "CN=root");
    assert_eq!(r["files"]["cert"], "c/root_cert.pem");
    let i = json(
        dir,
        "cert intermediate --name inter --ca c/root --out c --no-password",
    );
    assert_eq!(i["issuer"], "CN=root");
    let dev = json(dir, "cert device dev-1 --ca c/inter --out c --no-password");
    assert_eq!(dev["subject"], "CN=dev-1");
    assert_eq!(dev["sha1Thumbprint"].as_str().unwrap().len(), 40);
    let batch = json(
        dir,
        "cert device --count 3 --prefix b- --ca c/inter --out devs --no-password",
    );
    assert_eq!(batch["written"], 3);
    assert_eq!(batch["failed"], Value::Array(vec![]));
    let ver = json(
        dir,
        "cert verification 1A2B3C --ca c/inter --out c --no-password",
    );
    assert_eq!(ver["subject"], "CN=1A2B3C");
    ossl_csr(dir, "k.pem", "csr-1", "dev.csr");
    let csr = json(dir, "cert sign-csr dev.csr --ca c/inter --out c");
    assert_eq!(csr["subject"], "CN=csr-1");

    let info = json(dir, "cert inspect c/dev-1_fullchain.pem");
    assert_eq!(info.as_array().map(Vec::len), Some(2));
    assert_eq!(info[1]["subject"], "CN=inter");

    let b64 = json(dir, "cert base64 c/root_cert.pem");
    let plain = iotc(dir, &words("cert base64 c/root_cert.pem")).ok().stdout;
    assert_eq!(b64["certificate"], plain.trim());
    assert_eq!(b64["file"], "c/root_cert.pem");

    let ok = json(
        dir,
        "cert verify c/dev-1_fullchain.pem --ca-cert c/root_cert.pem",
    );
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["purpose"], "device");
    assert_eq!(ok["purposeSource"], "default");
    assert_eq!(
        ok["path"],
        serde_json::json!(["CN=dev-1", "CN=inter", "CN=root"])
    );
    assert_eq!(ok["failures"], Value::Array(vec![]));
    let ca = json(
        dir,
        "cert verify c/inter_cert.pem --ca-cert c/root_cert.pem --purpose ca",
    );
    assert_eq!(
        (ca["valid"].clone(), ca["purposeSource"].clone()),
        (true.into(), "flag".into())
    );

    let bench = json(
        dir,
        "cert bench --count 3 --encrypted-count 1 --openssl-count 0 --key-type ec-p256",
    );
    assert!(bench.is_object(), "{bench}");

    // The command's own --json still works, and the text form is not JSON.
    let own = iotc(dir, &words("cert inspect c/root_cert.pem --json")).ok();
    assert!(serde_json::from_str::<Value>(&own.stdout).is_ok());
    let text = iotc(dir, &words("cert inspect c/root_cert.pem")).ok();
    assert!(serde_json::from_str::<Value>(&text.stdout).is_err());
}

#[test]
fn a_failed_verify_answers_json_on_stdout_and_the_error_on_stderr() {
    let d = workdir();
    let dir = d.path();
    root(dir, "root", "c", &[]);
    intermediate(dir, "inter", "c/root", "c", &[]);
    let r = iotc(
        dir,
        &words(
            "--output json cert verify c/inter_cert.pem --ca-cert c/root_cert.pem \
             --purpose device --at 2100-01-01T00:00:00Z",
        ),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("one JSON document on stdout");
    assert_eq!(v["valid"], false);
    assert_eq!(v["path"], Value::Null);
    let reasons: Vec<&str> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "expired",
            "caOnEndEntity",
            "noClientAuth",
            "noDigitalSignature"
        ]
    );
    assert!(v["failures"][1]["message"]
        .as_str()
        .unwrap()
        .starts_with("CA:TRUE on a device certificate"));
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].starts_with("error: c/inter_cert.pem: verification failed: certificate expired")
    );
    // Bad input is an error, not a report: nothing on stdout.
    let missing = iotc(
        dir,
        &words("--output json cert verify nothere.pem --ca-cert c/root_cert.pem"),
    );
    assert_refused(&missing, "could not read nothere.pem");
    assert_eq!(missing.stdout, "");
}
