//! `iotc org|role|user|api-token|device|device-group|enrollment-group|device-template|config`:
//! the IoT Central REST API from the shell.
//!
//! Each command is a thin layer over one [`crate::central::Client`] method, so the CLI gets the
//! library's pacing, retries and paging for free (lists read every page). Output is a table for
//! people or, with `--output json`, the service's JSON (lists as one `{"value": [...]}` with all
//! pages). Errors print on one line with the service's code, message and requestId; the exit
//! code is 0 on success and 2 on any error.

mod resource;
mod tables;

use super::output::{print_json, print_table, OutputFormat};
use super::{CliError, CliResult, GlobalArgs, EXIT_OK};
use crate::central::models::{
    roles, ApiToken, Attestation, Device, DeviceGroup, DeviceTemplate, EnrollmentGroup,
    EnrollmentGroupType, GroupAttestation, Organization, Role, RoleAssignment,
    SigningX509Certificate, SymmetricKey, Tpm, User, UserKind, X509Certificate, X509Certificates,
    X509VerificationCertificate, X509,
};
use crate::central::{CertificateEntry, Client, ListOptions};
use crate::secret::Secret;
use clap::{Args, Subcommand, ValueEnum};
use resource::Patch;
use serde::Serialize;
use serde_json::{json, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use tables::Tabular;

pub use super::config::ConfigCommand;

/// What every command needs: a client and the output format.
struct Ctx {
    client: Client,
    output: OutputFormat,
}

/// Builds the client and runs `f` on a fresh runtime.
fn with_client<F, Fut>(global: &GlobalArgs, f: F) -> CliResult
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<(), CliError>>,
{
    let client = super::config::client(global)?;
    let ctx = Ctx {
        client,
        output: global.output,
    };
    super::runtime()?.block_on(f(ctx))?;
    Ok(EXIT_OK)
}

impl Ctx {
    fn done(&self, what: String) {
        if self.output == OutputFormat::Table {
            println!("{what}");
        }
    }

    fn fields(&self, json: &impl Serialize, rows: Vec<Vec<String>>) -> Result<(), CliError> {
        match self.output {
            OutputFormat::Json => print_json(json),
            OutputFormat::Table => {
                print_table(&["FIELD", "VALUE"], &rows);
                Ok(())
            }
        }
    }
}

/// Role names accepted for `--role` besides raw ids.
const ROLE_NAMES: &str =
    "administrator, operator, builder, org-admin, org-operator, org-viewer, or a role id";

/// A role id from a name (`operator`) or an id.
fn role_id(role: &str) -> Result<String, CliError> {
    let id = match role.to_ascii_lowercase().as_str() {
        "administrator" | "admin" => roles::ADMINISTRATOR,
        "operator" => roles::OPERATOR,
        "builder" => roles::BUILDER,
        "org-admin" => roles::ORG_ADMIN,
        "org-operator" => roles::ORG_OPERATOR,
        "org-viewer" => roles::ORG_VIEWER,
        "" => return Err(format!("--role is empty; use {ROLE_NAMES}").into()),
        _ => role,
    };
    Ok(id.to_owned())
}

fn assignment(role: &str, org: Option<&str>) -> Result<Vec<RoleAssignment>, CliError> {
    if let Some(o) = org {
        crate::ids::OrganizationId::new(o)?;
    }
    Ok(vec![RoleAssignment {
        role: role_id(role)?,
        organization: org.map(str::to_owned),
    }])
}

/// What IoT Central's certificate fields take: base64 of the PEM file as it is (what the docs'
/// convert.js does), or base64 of the DER bytes for a DER file.
fn certificate_string(path: &Path) -> Result<String, CliError> {
    use base64::Engine as _;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.trim_start().starts_with("-----BEGIN") {
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!("{} holds no CERTIFICATE PEM block", path.display()).into());
        }
    } else if bytes.first() != Some(&0x30) {
        return Err(format!("{} is neither a PEM certificate nor DER", path.display()).into());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(&bytes))
}

// ---------------------------------------------------------------------------------------------
// org

/// `iotc org …`
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// List the organizations.
    #[command(after_help = "Example:\n  iotc org list --output json")]
    List,
    /// Show one organization.
    #[command(after_help = "Example:\n  iotc org get seattle")]
    Get {
        /// Organization id.
        id: String,
    },
    /// Create an organization.
    #[command(
        after_help = "Example:\n  iotc org create seattle --display-name Seattle --parent usa"
    )]
    Create {
        /// Organization id (lowercase letters, digits, '-').
        id: String,
        /// Display name.
        #[arg(long)]
        display_name: String,
        /// Parent organization id.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Change an organization's display name or parent.
    #[command(after_help = "Example:\n  iotc org update seattle --display-name \"Seattle (WA)\"")]
    Update {
        /// Organization id.
        id: String,
        /// New display name.
        #[arg(long)]
        display_name: Option<String>,
        /// New parent organization id.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Delete an organization.
    #[command(after_help = "Example:\n  iotc org delete seattle")]
    Delete {
        /// Organization id.
        id: String,
    },
}

/// Runs `iotc org …`.
pub fn run_org(cmd: OrgCommand, global: &GlobalArgs) -> CliResult {
    with_client(global, |ctx| async move {
        match cmd {
            OrgCommand::List => ctx.list::<Organization>(&ListOptions::default()).await,
            OrgCommand::Get { id } => ctx.get::<Organization>(&id).await,
            OrgCommand::Create {
                id,
                display_name,
                parent,
            } => {
                let org = Organization {
                    id: None,
                    display_name: Some(display_name),
                    parent,
                };
                ctx.create(&id, &org).await
            }
            OrgCommand::Update {
                id,
                display_name,
                parent,
            } => {
                let patch = Patch::default()
                    .set("displayName", display_name)
                    .set("parent", parent);
                ctx.update::<Organization>(&id, patch).await
            }
            OrgCommand::Delete { id } => ctx.delete::<Organization>(&id).await,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// role

/// `iotc role …`
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// List the roles.
    #[command(after_help = "Example:\n  iotc role list")]
    List,
    /// Show one role.
    #[command(after_help = "Example:\n  iotc role get ae2c9854-393b-4f97-8c42-479d70ce626e")]
    Get {
        /// Role id.
        id: String,
    },
}

/// Runs `iotc role …`.
pub fn run_role(cmd: RoleCommand, global: &GlobalArgs) -> CliResult {
    with_client(global, |ctx| async move {
        match cmd {
            RoleCommand::List => ctx.list::<Role>(&ListOptions::default()).await,
            RoleCommand::Get { id } => ctx.get::<Role>(&role_id(&id)?).await,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// user

/// Who a user is: an email, or an Azure AD service principal / group.
#[derive(Debug, Clone, Args)]
pub struct UserIdentity {
    /// Email address (an email user).
    #[arg(long, conflicts_with_all = ["tenant_id", "object_id", "ad_group"])]
    pub email: Option<String>,
    /// Azure AD tenant id (service principal or AD group).
    #[arg(long, requires = "object_id")]
    pub tenant_id: Option<String>,
    /// Azure AD object id (service principal or AD group).
    #[arg(long, requires = "tenant_id")]
    pub object_id: Option<String>,
    /// The object id is an AD group, not a service principal.
    #[arg(long, requires = "object_id")]
    pub ad_group: bool,
}

/// `iotc user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List the users.
    #[command(after_help = "Example:\n  iotc user list --max-page-size 100")]
    List {
        /// Page size asked of the service (1-100; uses the preview api-version).
        #[arg(long)]
        max_page_size: Option<u32>,
    },
    /// Show one user.
    #[command(after_help = "Example:\n  iotc user get alice")]
    Get {
        /// User id.
        id: String,
    },
    /// Add a user: an email user, or a service principal / AD group (--tenant-id --object-id).
    #[command(
        after_help = "Examples:\n  iotc user create alice --email alice@contoso.com --role operator\n  \
iotc user create ci-bot --tenant-id $TENANT --object-id $OBJECT --role org-admin --org seattle\n  \
iotc user create ops-team --tenant-id $TENANT --object-id $GROUP --ad-group --role builder"
    )]
    Create {
        /// User id (letters, digits, '-', '_').
        id: String,
        /// Who the user is.
        #[command(flatten)]
        identity: UserIdentity,
        /// Role: administrator, operator, builder, org-admin, org-operator, org-viewer or an id.
        #[arg(long)]
        role: String,
        /// Organization the role applies to (default: the whole application).
        #[arg(long)]
        org: Option<String>,
    },
    /// Change a user's role (and organization) or email.
    #[command(after_help = "Example:\n  iotc user update alice --role builder --org seattle")]
    Update {
        /// User id.
        id: String,
        /// New role (replaces the user's roles).
        #[arg(long)]
        role: Option<String>,
        /// Organization of the new role.
        #[arg(long, requires = "role")]
        org: Option<String>,
        /// New email.
        #[arg(long)]
        email: Option<String>,
    },
    /// Remove a user.
    #[command(after_help = "Example:\n  iotc user delete alice")]
    Delete {
        /// User id.
        id: String,
    },
}

/// Runs `iotc user …`.
pub fn run_user(cmd: UserCommand, global: &GlobalArgs) -> CliResult {
    with_client(global, |ctx| async move {
        match cmd {
            UserCommand::List { max_page_size } => {
                let opts = ListOptions {
                    max_page_size,
                    ..Default::default()
                };
                ctx.list::<User>(&opts).await
            }
            UserCommand::Get { id } => ctx.get::<User>(&id).await,
            UserCommand::Create {
                id,
                identity,
                role,
                org,
            } => {
                let kind = match identity {
                    UserIdentity {
                        email: Some(email), ..
                    } => UserKind::Email { email },
                    UserIdentity {
                        tenant_id: Some(tenant_id),
                        object_id: Some(object_id),
                        ad_group,
                        ..
                    } => {
                        if ad_group {
                            UserKind::AdGroup {
                                tenant_id,
                                object_id,
                            }
                        } else {
                            UserKind::ServicePrincipal {
                                tenant_id,
                                object_id,
                            }
                        }
                    }
                    _ => {
                        return Err(
                            "say who the user is: --email E, or --tenant-id T --object-id O".into(),
                        )
                    }
                };
                let user = User {
                    id: None,
                    kind,
                    roles: assignment(&role, org.as_deref())?,
                };
                ctx.create(&id, &user).await
            }
            UserCommand::Update {
                id,
                role,
                org,
                email,
            } => {
                let roles = match role {
                    Some(r) => Some(serde_json::to_value(assignment(&r, org.as_deref())?)?),
                    None => None,
                };
                let patch = Patch::default().set("roles", roles).set("email", email);
                ctx.update::<User>(&id, patch).await
            }
            UserCommand::Delete { id } => ctx.delete::<User>(&id).await,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// api-token

/// `iotc api-token …`
#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// List the API tokens (every page; values are never returned).
    #[command(after_help = "Example:\n  iotc api-token list")]
    List,
    /// Show one API token's roles and expiry.
    #[command(after_help = "Example:\n  iotc api-token get line-1")]
    Get {
        /// Token id.
        id: String,
    },
    /// Create an API token. Its value is shown once: store it now.
    #[command(
        after_help = "Example:\n  iotc api-token create line-1 --role operator --org factory-a --output json"
    )]
    Create {
        /// Token id.
        id: String,
        /// Role: administrator, operator, builder, org-admin, org-operator, org-viewer or an id.
        #[arg(long)]
        role: String,
        /// Organization the role applies to.
        #[arg(long)]
        org: Option<String>,
        /// Expiry (RFC 3339, for example 2027-01-01T00:00:00Z; default: one year).
        #[arg(long)]
        expiry: Option<String>,
    },
    /// Delete (revoke) an API token.
    #[command(after_help = "Example:\n  iotc api-token delete line-1")]
    Delete {
        /// Token id.
        id: String,
    },
}

/// Runs `iotc api-token …`.
pub fn run_api_token(cmd: ApiTokenCommand, global: &GlobalArgs) -> CliResult {
    with_client(global, |ctx| async move {
        let c = &ctx.client;
        match cmd {
            ApiTokenCommand::List => ctx.list::<ApiToken>(&ListOptions::default()).await,
            ApiTokenCommand::Get { id } => ctx.get::<ApiToken>(&id).await,
            ApiTokenCommand::Create {
                id,
                role,
                org,
                expiry,
            } => {
                if let Some(e) = &expiry {
                    time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| format!("--expiry {e:?} is not an RFC 3339 date-time"))?;
                }
                let req = ApiToken {
                    id: None,
                    roles: assignment(&role, org.as_deref())?,
                    token: None,
                    expiry,
                };
                let created = c.create_api_token(&id, &req).await?;
                match ctx.output {
                    OutputFormat::Json => print_json(&created)?,
                    OutputFormat::Table => {
                        print_table(ApiToken::HEADER, &[created.row()]);
                        match &created.token {
                            Some(t) => {
                                println!("token: {}", t.expose());
                                eprintln!("note: the token is shown only once; store it now");
                            }
                            None => eprintln!("warning: the service returned no token value"),
                        }
                    }
                }
                Ok(())
            }
            ApiTokenCommand::Delete { id } => ctx.delete::<ApiToken>(&id).await,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// device

/// List query options (they switch the call to the preview api-version).
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Filter expression, for example "contains(displayName, 'Thermostat')".
    #[arg(long)]
    pub filter: Option<String>,
    /// Order, for example "displayName desc".
    #[arg(long)]
    pub orderby: Option<String>,
    /// Page size asked of the service (1-100).
    #[arg(long)]
    pub max_page_size: Option<u32>,
}

impl QueryArgs {
    fn options(&self) -> ListOptions {
        ListOptions {
            filter: self.filter.clone(),
            orderby: self.orderby.clone(),
            max_page_size: self.max_page_size,
        }
    }
}

/// `iotc device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List the devices (every page).
    #[command(after_help = "Examples:\n  iotc device list\n  \
iotc device list --filter \"provisioned eq false\" --orderby displayName --max-page-size 100")]
    List {
        /// Query options.
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Show one device.
    #[command(after_help = "Example:\n  iotc device get thermostat-01")]
    Get {
        /// Device id.
        id: String,
    },
    /// Create a device.
    #[command(
        after_help = "Example:\n  iotc device create thermostat-01 --display-name \"Thermostat 01\" \
--template \"dtmi:contoso:Thermostat;1\" --org seattle"
    )]
    Create {
        /// Device id.
        id: String,
        /// Display name.
        #[arg(long)]
        display_name: String,
        /// Device template id (DTMI).
        #[arg(long)]
        template: Option<String>,
        /// Make it a simulated device.
        #[arg(long)]
        simulated: bool,
        /// Create it disabled (it cannot connect until enabled).
        #[arg(long)]
        disabled: bool,
        /// Organization the device belongs to.
        #[arg(long)]
        org: Option<String>,
    },
    /// Change a device.
    #[command(
        after_help = "Example:\n  iotc device update thermostat-01 --enabled false --display-name \"Spare\""
    )]
    Update {
        /// Device id.
        id: String,
        /// New display name.
        #[arg(long)]
        display_name: Option<String>,
        /// New template (DTMI).
        #[arg(long)]
        template: Option<String>,
        /// Enable or disable.
        #[arg(long)]
        enabled: Option<bool>,
        /// Simulated or not.
        #[arg(long)]
        simulated: Option<bool>,
        /// Move to this organization.
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete a device.
    #[command(after_help = "Example:\n  iotc device delete thermostat-01")]
    Delete {
        /// Device id.
        id: String,
    },
    /// Show what the device needs to connect: id scope and keys or certificate thumbprints.
    #[command(after_help = "Example:\n  iotc device credentials thermostat-01 --output json")]
    Credentials {
        /// Device id.
        id: String,
    },
    /// The device's individual attestation (get, set, update, delete).
    #[command(subcommand)]
    Attestation(AttestationCommand),
}

/// `iotc device attestation …`
#[derive(Debug, Subcommand)]
pub enum AttestationCommand {
    /// Show the attestation.
    #[command(after_help = "Example:\n  iotc device attestation get thermostat-01")]
    Get {
        /// Device id.
        id: String,
    },
    /// Set the attestation: symmetric keys, X.509 client certificate(s) or a TPM key.
    #[command(
        after_help = "Examples:\n  iotc device attestation set dev-1 --symmetric-key\n  \
iotc device attestation set dev-1 --cert certs/dev-1_cert.pem\n  \
iotc device attestation set dev-1 --tpm \"$ENDORSEMENT_KEY\""
    )]
    Set {
        /// Device id.
        id: String,
        /// Symmetric-key attestation (keys generated unless --primary-key-file /
        /// --secondary-key-file give them).
        #[arg(long, conflicts_with_all = ["cert", "tpm"])]
        symmetric_key: bool,
        /// File whose first line is the primary key (base64 of 16 to 64 bytes). Needs
        /// --symmetric-key: that flag chooses the kind of attestation, and a key belongs to a
        /// symmetric-key one only.
        #[arg(long, value_name = "FILE", requires = "symmetric_key")]
        primary_key_file: Option<PathBuf>,
        /// File whose first line is the secondary key (base64 of 16 to 64 bytes). Needs
        /// --symmetric-key, as --primary-key-file.
        #[arg(long, value_name = "FILE", requires = "symmetric_key")]
        secondary_key_file: Option<PathBuf>,
        /// X.509 attestation: the device's certificate (PEM or DER).
        #[arg(long, conflicts_with = "tpm")]
        cert: Option<PathBuf>,
        /// Secondary X.509 certificate.
        #[arg(long, requires = "cert")]
        secondary_cert: Option<PathBuf>,
        /// TPM attestation: the endorsement key.
        #[arg(long)]
        tpm: Option<String>,
    },
    /// Change part of the attestation (a JSON merge patch): a key, a certificate or the TPM
    /// key. The options say which kind of attestation they belong to; the service refuses a
    /// patch that leaves an incomplete one (for example one key on an X.509 attestation).
    #[command(
        after_help = "Examples:\n  iotc device attestation update dev-1 --secondary-key-file new-key.txt\n  \
iotc device attestation update cam-1 --secondary-cert certs/cam-1-next_cert.pem\n  \
iotc device attestation update cam-1 --remove-secondary-cert\n  \
iotc device attestation update tpm-1 --tpm \"$ENDORSEMENT_KEY\""
    )]
    Update(AttestationUpdate),
    /// Remove the attestation.
    #[command(after_help = "Example:\n  iotc device attestation delete thermostat-01")]
    Delete {
        /// Device id.
        id: String,
    },
}

/// Options of `iotc device attestation update`: at least one change.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true)))]
pub struct AttestationUpdate {
    /// Device id.
    pub id: String,
    /// File whose first line is the new primary key (base64 of 16 to 64 bytes) of a
    /// symmetric-key attestation.
    #[arg(long, value_name = "FILE", group = "change", conflicts_with_all = ["cert", "secondary_cert", "remove_secondary_cert", "tpm"])]
    pub primary_key_file: Option<PathBuf>,
    /// File whose first line is the new secondary key (base64 of 16 to 64 bytes) of a
    /// symmetric-key attestation.
    #[arg(long, value_name = "FILE", group = "change", conflicts_with_all = ["cert", "secondary_cert", "remove_secondary_cert", "tpm"])]
    pub secondary_key_file: Option<PathBuf>,
    /// New primary certificate (PEM or DER) of an X.509 attestation.
    #[arg(long, group = "change", conflicts_with = "tpm")]
    pub cert: Option<PathBuf>,
    /// New secondary certificate (PEM or DER) of an X.509 attestation.
    #[arg(long, group = "change", conflicts_with_all = ["tpm", "remove_secondary_cert"])]
    pub secondary_cert: Option<PathBuf>,
    /// Remove the secondary certificate of an X.509 attestation.
    #[arg(long, group = "change", conflicts_with = "tpm")]
    pub remove_secondary_cert: bool,
    /// New endorsement key of a TPM attestation.
    #[arg(long, group = "change")]
    pub tpm: Option<String>,
}

fn random_key() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The key in `file` (its first line), checked; none when no file is given.
fn key_file(flag: &str, file: Option<&std::path::Path>) -> Result<Option<String>, CliError> {
    let Some(path) = file else { return Ok(None) };
    let key = super::cert::read_password_file(path, "key")?;
    check_key(flag, key.expose())?;
    Ok(Some(key.expose().to_owned()))
}

fn check_key(name: &str, key: &str) -> Result<(), CliError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| format!("{name} is not valid base64"))?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(format!("{name} must be 16 to 64 bytes, not {}", bytes.len()).into());
    }
    Ok(())
}

/// The merge patch of `iotc device attestation update`. It always names the attestation
/// `type` its options belong to: without it a key sent to an X.509 attestation would be
/// merged in and ignored, and the command would report success for a change that did nothing.
fn attestation_patch(update: AttestationUpdate) -> Result<Value, CliError> {
    let AttestationUpdate {
        primary_key_file,
        secondary_key_file,
        cert,
        secondary_cert,
        remove_secondary_cert,
        tpm,
        ..
    } = update;
    if primary_key_file.is_some() || secondary_key_file.is_some() {
        let primary_key = key_file("--primary-key-file", primary_key_file.as_deref())?;
        let secondary_key = key_file("--secondary-key-file", secondary_key_file.as_deref())?;
        let keys = Patch::default()
            .set("primaryKey", primary_key)
            .set("secondaryKey", secondary_key);
        return Ok(json!({"type": "symmetricKey", "symmetricKey": keys.into_value()?}));
    }
    if let Some(ek) = tpm {
        return Ok(json!({"type": "tpm", "tpm": {"endorsementKey": ek}}));
    }
    let entry = |path: Option<PathBuf>| -> Result<Option<Value>, CliError> {
        Ok(match path {
            Some(p) => Some(json!({"certificate": certificate_string(&p)?})),
            None => None,
        })
    };
    let mut certs = Patch::default()
        .set("primary", entry(cert)?)
        .set("secondary", entry(secondary_cert)?);
    if remove_secondary_cert {
        certs = certs.set("secondary", Some(Value::Null));
    }
    Ok(json!({"type": "x509", "x509": {"clientCertificates": certs.into_value()?}}))
}

/// Runs `iotc device …`.
pub fn run_device(cmd: DeviceCommand, global: &GlobalArgs) -> CliResult {
    with_client(global, |ctx| async move {
        let c = &ctx.client;
        match cmd {
            DeviceCommand::List { query } => ctx.list::<Device>(&query.options()).await,
            DeviceCommand::Get { id } => ctx.get::<Device>(&id).await,
            DeviceCommand::Create {
                id,
                display_name,
                template,
                simulated,
                disabled,
                org,
            } => {
                if let Some(o) = &org {
                    crate::ids::OrganizationId::new(o.as_str())?;
                }
                let device = Device {
                    display_name: Some(display_name),
                    template,
                    simulated: Some(simulated),
                    enabled: Some(!disabled),
                    organizations: org.map(|o| vec![o]),
                    ..Default::default()
                };
                ctx.create(&id, &device).await
            }
            DeviceCommand::Update {
                id,
                display_name,
                template,
                enabled,
                simulated,
                org,
            } => {
                let patch = Patch::default()
                    .set("displayName", display_name)
                    .set("template", template)
                    .set("enabled", enabled)
                    .set("simulated", simulated)
                    .set("organizations", org.map(|o| json!([o])));
                ctx.update::<Device>(&id, patch).await
            }
            DeviceCommand::Delete { id } => ctx.delete::<Device>(&id).await,
            DeviceCommand::Credentials { id } => {
                let creds = c.get_device_credentials(&id).await?;
                ctx.fields(&creds, tables::credential_rows(&creds))
            }
            DeviceCommand::Attestation(AttestationCommand::Get { id }) => {
                let a = c.get_device_attestation(&id).await?;
                ctx.fields(&a, tables::attestation_rows(&a))
            }
            DeviceCommand::Attestation(AttestationCommand::Set {
                id,
                symmetric_key,
                primary_key_file,
                secondary_key_file,
                cert,
                secondary_cert,
                tpm,
            }) => {
                let attestation = if symmetric_key {
                    let primary = key_file("--primary-key-file", primary_key_file.as_deref())?
                        .unwrap_or_else(random_key);
                    let secondary =
                        key_file("--secondary-key-file", secondary_key_file.as_deref())?
                            .unwrap_or_else(random_key);
                    Attestation::SymmetricKey {
                        symmetric_key: SymmetricKey {
                            primary_key: Secret::new(primary),
                            secondary_key: Secret::new(secondary),
                        },
                    }
                } else if let Some(cert) = cert {
                    let primary = X509Certificate {
                        certificate: Some(certificate_string(&cert)?),
                        info: None,
                    };
                    let secondary = match secondary_cert {
                        Some(p) => Some(X509Certificate {
                            certificate: Some(certificate_string(&p)?),
                            info: None,
                        }),
                        None => None,
                    };
                    Attestation::X509 {
                        x509: X509 {
                            client_certificates: Some(X509Certificates { primary, secondary }),
                        },
                    }
                } else if let Some(ek) = tpm {
                    Attestation::Tpm {
                        tpm: Tpm {
                            endorsement_key: ek,
                        },
                    }
                } else {
                    return Err("choose one: --symmetric-key, --cert PEM or --tpm KEY".into());
                };
                let a = c.set_device_attestation(&id, &attestation).await?;
                ctx.fields(&a, tables::attestation_rows(&a))
            }
            DeviceCommand::Attestation(AttestationCommand::Update(update)) => {
                let id = update.id.clone();
                let patch = attestation_patch(update)?;
                let a = c.update_device_attestation(&id, &patch).await?;
                ctx.fields(&a, tables::attestation_rows(&a))
            }
            DeviceCommand::Attestation(AttestationCommand::Delete { id }) => {
                c.delete_device_attestation(&id).await?;
                ctx.done(format!("deleted the attestation of device {id}"));
                Ok(())
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// device-group

/// `iotc device-group …`
#[derive(Debug, Subcommand)]
pub enum DeviceGroupCommand {
    /// List the device groups.
    #[command(after_help = "Example:\n  iotc device-group list --orderby displayName")]
    List {
        /// Query options.
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Show one device group.
    #[command(after_help = "Example:\n  iotc device-group get thermostats")]
    Get {
        /// Device group id.
        id: String,
    },
    /// Create a device group.
    #[command(
        after_help = "Example:\n  iotc device-group create thermostats --display-name Thermostats \
--filter \"SELECT * FROM devices WHERE \\$template = \\\"dtmi:contoso:Thermostat;1\\\"\""
    )]
    Create {
        /// Device group id (letters, digits, '-', '_').
        id: String,
        /// Display name.
        #[arg(long)]
        display_name: String,
        /// The query selecting the group's devices.
        #[arg(long)]
        filter: String,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// Organization of the group.
        #[arg(long)]
        org: Option<String>,
    },
    /// Change a device group.
    #[command(
        after_help = "Example:\n  iotc device-group update thermostats --description \"All thermostats\""
    )]
    Update {
        /// Device group id.
        id: String,
        /// New display name.
        #[arg(long)]
        display_name: Option<String>,
        /// New query.
        #[arg(long)]
        filter: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// New organization.
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete a device group.
    #[command(after_help = "Example:\n  iotc device-group delete thermostats")]
    Delete {
        /// Device group id.
        id: String,
    },
    /// List the devices of a device group (every page).
    #[command(
        after_help = "Example:\n  iotc device-group devices thermostats --max-page-size 100"
    )]
    Devices {
        /// Device group id.
        id: String,
        /// Page size asked of the service (1-100).
        #[arg(long)]
        max_page_size: Option<u32>,
    },
}

/// Runs `iotc device-group …`.
pub fn run_device_group(cmd: DeviceGroupCommand, global: &GlobalArgs) -> CliResult {
    with_client(global, |ctx| async move {
        match cmd {
            DeviceGroupCommand::List { query } => ctx.list::<DeviceGroup>(&query.options()).await,
            DeviceGroupCommand::Get { id } => ctx.get::<DeviceGroup>(&id).await,
            DeviceGroupCommand::Create {
                id,
                display_name,
                filter,
                description,
                org,
            } => {
                let g = DeviceGroup {
                    display_name,
                    filter,
                    description,
                    organizations: org.map(|o| vec![o]),
                    ..Default::default()
                };
                ctx.create(&id, &g).await
            }
            DeviceGroupCommand::Update {
                id,
                display_name,
                filter,
                description,
                org,
            } => {
                let patch = Patch::default()
                    .set("displayName", display_name)
                    .set("filter", filter)
                    .set("description", description)
                    .set("organizations", org.map(|o| json!([o])));
                ctx.update::<DeviceGroup>(&id, patch).await
            }
            DeviceGroupCommand::Delete { id } => ctx.delete::<DeviceGroup>(&id).await,
            DeviceGroupCommand::Devices { id, max_page_size } => {
                let opts = ListOptions {
                    max_page_size,
                    ..Default::default()
                };
                ctx.show_all(ctx.client.list_device_group_devices(&id, &opts))
                    .await
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// enrollment-group

/// How the devices of a group attest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttestationKind {
    /// X.509 CA certificates (upload one with `cert set`).
    X509,
    /// Group symmetric keys (generated by the service).
    SymmetricKey,
}

/// Device kind of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupKind {
    /// IoT devices.
    Iot,
    /// IoT Edge devices.
    IotEdge,
}

/// `--entry primary|secondary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Entry {
    /// The primary certificate.
    Primary,
    /// The secondary certificate.
    Secondary,
}

impl From<Entry> for CertificateEntry {
    fn from(e: Entry) -> Self {
        match e {
            Entry::Primary => CertificateEntry::Primary,
            Entry::Secondary => CertificateEntry::Secondary,
        }
    }
}

/// `iotc enrollment-group …`
#[derive(Debug, Subcommand)]
pub enum EnrollmentGroupCommand {
    /// List the enrollment groups.
    #[command(after_help = "Example:\n  iotc enrollment-group list")]
    List,
    /// Show one enrollment group.
    #[command(after_help = "Example:\n  iotc enrollment-group get line-1 --output json")]
    Get {
        /// Enrollment group id.
        id: String,
    },
    /// Create an enrollment group.
    #[command(
        after_help = "Examples:\n  iotc enrollment-group create line-1 --display-name \"Line 1\" --attestation x509\n  \
iotc enrollment-group create gateways --display-name Gateways --attestation symmetric-key --type iot-edge"
    )]
    Create {
        /// Enrollment group id (letters, digits, '-').
        id: String,
        /// Display name.
        #[arg(long)]
        display_name: String,
        /// How devices attest.
        #[arg(long, value_enum)]
        attestation: AttestationKind,
        /// Device kind.
        #[arg(long = "type", value_enum, default_value_t = GroupKind::Iot)]
        group_type: GroupKind,
        /// Create the group disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Change an enrollment group's display name or enable/disable it.
    #[command(after_help = "Example:\n  iotc enrollment-group update line-1 --enabled false")]
    Update {
        /// Enrollment group id.
        id: String,
        /// New display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Enable or disable.
        #[arg(long)]
        enabled: Option<bool>,
    },
    /// Delete an enrollment group.
    #[command(after_help = "Example:\n  iotc enrollment-group delete line-1")]
    Delete {
        /// Enrollment group id.
        id: String,
    },
    /// The group's X.509 signing (CA) certificates.
    #[command(subcommand)]
    Cert(GroupCertCommand),
    /// Generate a verification code (CN of the proof-of-possession certificate).
    #[command(
        after_help = "Example:\n  iotc enrollment-group verification-code line-1 --entry primary"
    )]
    VerificationCode {
        /// Enrollment group id.
        id: String,
        /// Which certificate.
        #[arg(long, value_enum, default_value_t = Entry::Primary)]
        entry: Entry,
    },
    /// Prove possession of the CA key with a certificate whose CN is the verification code.
    #[command(
        after_help = "Example:\n  iotc enrollment-group verify line-1 --entry primary --cert certs/verification_cert.pem"
    )]
    Verify {
        /// Enrollment group id.
        id: String,
        /// Which certificate.
        #[arg(long, value_enum, default_value_t = Entry::Primary)]
        entry: Entry,
        /// The verification certificate (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
    },
}

/// `iotc enrollment-group cert …`
#[derive(Debug, Subcommand)]
pub enum GroupCertCommand {
    /// Upload a CA certificate (unverified unless --verified).
    #[command(
        after_help = "Example:\n  iotc enrollment-group cert set line-1 --entry primary --cert certs/root_cert.pem"
    )]
    Set {
        /// Enrollment group id.
        id: String,
        /// Which certificate.
        #[arg(long, value_enum, default_value_t = Entry::Primary)]
        entry: Entry,
        /// The CA certificate (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
        /// Mark it verified without proof of possession (self-attestation).
        #[arg(long)]
        verified: bool,
    },
    /// Show a certificate's state and thumbprint.
    #[command(after_help = "Example:\n  iotc enrollment-group cert get line-1 --entry primary")]
    Get {
        /// Enrollment group id.
        id: String,
        /// Which certificate.
        #[arg(long, value_enum, default_value_t = Entry::Primary)]
        entry: Entry,
    },
    /// Remove a certificate.
    #[command(
        after_help = "Example:\n  iotc enrollment-group cert delete line-1 --entry secondary"
    )]
    Delete {
        /// Enrollment group id.
        id: String,
        /// Which certificate.
        #[arg(long, value_enum, default_value_t = Entry::Primary)]
        entry: Entry,
    },
}

const CERT_HEADER: &[&str] = &["ENTRY", "VERIFIED", "SHA1 THUMBPRINT"];

/// Runs `iotc enrollment-group …`.
pub fn run_enrollment_group(cmd: EnrollmentGroupCommand, global: &GlobalArgs) -> CliResult {
    with_client(global, |ctx| async move {
        let c = &ctx.client;
        let show_cert = |entry: Entry, cert: &SigningX509Certificate| match ctx.output {
            OutputFormat::Json => print_json(cert),
            OutputFormat::Table => {
                let e = CertificateEntry::from(entry);
                print_table(CERT_HEADER, &[tables::certificate_row(e.as_str(), cert)]);
                Ok(())
            }
        };
        match cmd {
            EnrollmentGroupCommand::List => {
                ctx.list::<EnrollmentGroup>(&ListOptions::default()).await
            }
            EnrollmentGroupCommand::Get { id } => ctx.get::<EnrollmentGroup>(&id).await,
            EnrollmentGroupCommand::Create {
                id,
                display_name,
                attestation,
                group_type,
                disabled,
            } => {
                let g = EnrollmentGroup {
                    id: None,
                    display_name,
                    enabled: Some(!disabled),
                    group_type: match group_type {
                        GroupKind::Iot => EnrollmentGroupType::Iot,
                        GroupKind::IotEdge => EnrollmentGroupType::IotEdge,
                    },
                    attestation: match attestation {
                        AttestationKind::X509 => GroupAttestation::X509 { x509: None },
                        AttestationKind::SymmetricKey => GroupAttestation::SymmetricKey {
                            symmetric_key: None,
                        },
                    },
                    etag: None,
                    id_scope: None,
                };
                ctx.create(&id, &g).await
            }
            EnrollmentGroupCommand::Update {
                id,
                display_name,
                enabled,
            } => {
                let patch = Patch::default()
                    .set("displayName", display_name)
                    .set("enabled", enabled);
                ctx.update::<EnrollmentGroup>(&id, patch).await
            }
            EnrollmentGroupCommand::Delete { id } => ctx.delete::<EnrollmentGroup>(&id).await,
            EnrollmentGroupCommand::Cert(GroupCertCommand::Set {
                id,
                entry,
                cert,
                verified,
            }) => {
                let body = SigningX509Certificate {
                    verified,
                    certificate: Some(certificate_string(&cert)?),
                    info: None,
                    etag: None,
                };
                let out = c
                    .set_enrollment_group_certificate(&id, entry.into(), &body)
                    .await?;
                show_cert(entry, &out)
            }
            EnrollmentGroupCommand::Cert(GroupCertCommand::Get { id, entry }) => {
                let out = c
                    .get_enrollment_group_certificate(&id, entry.into())
                    .await?;
                show_cert(entry, &out)
            }
            EnrollmentGroupCommand::Cert(GroupCertCommand::Delete { id, entry }) => {
                c.delete_enrollment_group_certificate(&id, entry.into())
                    .await?;
                ctx.done(format!(
                    "deleted the {} certificate of enrollment group {id}",
                    CertificateEntry::from(entry)
                ));
                Ok(())
            }
            EnrollmentGroupCommand::VerificationCode { id, entry } => {
                let code = c.generate_verification_code(&id, entry.into()).await?;
                match ctx.output {
                    OutputFormat::Json => print_json(&code),
                    OutputFormat::Table => {
                        print_table(&["VERIFICATION CODE"], &[vec![code.verification_code]]);
                        Ok(())
                    }
                }
            }
            EnrollmentGroupCommand::Verify { id, entry, cert } => {
                let body = X509VerificationCertificate {
                    certificate: certificate_string(&cert)?,
                };
                c.verify_enrollment_group_certificate(&id, entry.into(), &body)
                    .await?;
                ctx.done(format!(
                    "the {} certificate of enrollment group {id} is verified",
                    CertificateEntry::from(entry)
                ));
                Ok(())
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// device-template

/// `iotc device-template …`
#[derive(Debug, Subcommand)]
pub enum DeviceTemplateCommand {
    /// List the device templates.
    #[command(after_help = "Example:\n  iotc device-template list")]
    List {
        /// Query options.
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Show one device template.
    #[command(
        after_help = "Example:\n  iotc device-template get \"dtmi:contoso:Thermostat;1\" --output json"
    )]
    Get {
        /// Template id (DTMI).
        id: String,
    },
}

/// Runs `iotc device-template …`.
pub fn run_device_template(cmd: DeviceTemplateCommand, global: &GlobalArgs) -> CliResult {
    with_client(global, |ctx| async move {
        match cmd {
            DeviceTemplateCommand::List { query } => {
                ctx.list::<DeviceTemplate>(&query.options()).await
            }
            DeviceTemplateCommand::Get { id } => ctx.get::<DeviceTemplate>(&id).await,
        }
    })
}

/// Runs `iotc config …`.
pub fn run_config(cmd: ConfigCommand, global: &GlobalArgs) -> CliResult {
    super::config::run(cmd, global)
}
