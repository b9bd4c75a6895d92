//! `iotc org|role|user|api-token|device|device-group|enrollment-group|device-template|config`
//! (filled in by the IoT Central client work).

use super::{CliResult, GlobalArgs};

macro_rules! placeholder {
    ($($name:ident => $run:ident),*) => {$(
        /// Placeholder.
        #[derive(Debug, clap::Subcommand)]
        pub enum $name {
            /// List.
            List,
        }
        /// Runs the command.
        pub fn $run(_cmd: $name, _global: &GlobalArgs) -> CliResult {
            Err("not implemented yet".into())
        }
    )*};
}

placeholder!(
    OrgCommand => run_org,
    RoleCommand => run_role,
    UserCommand => run_user,
    ApiTokenCommand => run_api_token,
    DeviceCommand => run_device,
    DeviceGroupCommand => run_device_group,
    EnrollmentGroupCommand => run_enrollment_group,
    DeviceTemplateCommand => run_device_template,
    ConfigCommand => run_config
);
