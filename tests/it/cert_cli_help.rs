//! Every `iotc cert` subcommand's help teaches by example; key-making ones explain passwords.

use crate::common_cert;
use common_cert::*;

#[test]
fn every_cert_command_help_has_an_example() {
    let d = workdir();
    for cmd in [
        "root",
        "intermediate",
        "device",
        "verification",
        "sign-csr",
        "inspect",
        "verify",
        "base64",
        "bench",
    ] {
        for flag in ["-h", "--help"] {
            let r = iotc(d.path(), &["cert", cmd, flag]).ok();
            assert!(r.stdout.contains("Example"), "{cmd} {flag}:\n{}", r.stdout);
            assert!(
                r.stdout.contains(&format!("iotc cert {cmd}")),
                "{cmd} {flag}"
            );
            if ["root", "intermediate", "device", "verification"].contains(&cmd) {
                assert!(
                    r.stdout.contains("There is no default password"),
                    "{cmd} {flag}"
                );
            }
        }
    }
}
