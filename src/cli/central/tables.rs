//! Table rendering of IoT Central resources: one header and one row function per type, so
//! `list` and `get` print the same columns.

use crate::central::models::{
    roles, ApiToken, Attestation, Device, DeviceCredentials, DeviceGroup, DeviceTemplate,
    EnrollmentGroup, GroupAttestation, Organization, Role, RoleAssignment, SigningX509Certificate,
    User, UserKind, X509,
};

/// A type that prints as table rows.
pub trait Tabular {
    /// Column titles.
    const HEADER: &'static [&'static str];
    /// One row.
    fn row(&self) -> Vec<String>;
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn flag(b: Option<bool>) -> String {
    match b {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => String::new(),
    }
}

/// The readable name of a built-in role id (the id itself otherwise).
pub fn role_name(id: &str) -> &str {
    match id {
        roles::ADMINISTRATOR => "Administrator",
        roles::OPERATOR => "Operator",
        roles::BUILDER => "Builder",
        roles::ORG_ADMIN => "Org Admin",
        roles::ORG_OPERATOR => "Org Operator",
        roles::ORG_VIEWER => "Org Viewer",
        other => other,
    }
}

fn assignments(roles: &[RoleAssignment]) -> String {
    roles
        .iter()
        .map(|r| match &r.organization {
            Some(o) => format!("{}@{o}", role_name(&r.role)),
            None => role_name(&r.role).to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Tabular for Organization {
    const HEADER: &'static [&'static str] = &["ID", "DISPLAY NAME", "PARENT"];
    fn row(&self) -> Vec<String> {
        vec![opt(&self.id), opt(&self.display_name), opt(&self.parent)]
    }
}

impl Tabular for Role {
    const HEADER: &'static [&'static str] = &["ID", "DISPLAY NAME"];
    fn row(&self) -> Vec<String> {
        vec![opt(&self.id), opt(&self.display_name)]
    }
}

impl Tabular for User {
    const HEADER: &'static [&'static str] = &["ID", "TYPE", "IDENTITY", "ROLES"];
    fn row(&self) -> Vec<String> {
        let (kind, identity) = match &self.kind {
            UserKind::Email { email } => ("email", email.clone()),
            UserKind::ServicePrincipal {
                tenant_id,
                object_id,
            } => (
                "servicePrincipal",
                format!("{object_id} (tenant {tenant_id})"),
            ),
            UserKind::AdGroup {
                tenant_id,
                object_id,
            } => ("adGroup", format!("{object_id} (tenant {tenant_id})")),
        };
        vec![
            opt(&self.id),
            kind.into(),
            identity,
            assignments(&self.roles),
        ]
    }
}

impl Tabular for ApiToken {
    const HEADER: &'static [&'static str] = &["ID", "ROLES", "EXPIRY"];
    fn row(&self) -> Vec<String> {
        vec![opt(&self.id), assignments(&self.roles), opt(&self.expiry)]
    }
}

impl Tabular for Device {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "DISPLAY NAME",
        "TEMPLATE",
        "ENABLED",
        "PROVISIONED",
        "SIMULATED",
        "ORGANIZATIONS",
    ];
    fn row(&self) -> Vec<String> {
        vec![
            opt(&self.id),
            opt(&self.display_name),
            opt(&self.template),
            flag(self.enabled),
            flag(self.provisioned),
            flag(self.simulated),
            self.organizations.as_deref().unwrap_or_default().join(","),
        ]
    }
}

impl Tabular for DeviceGroup {
    const HEADER: &'static [&'static str] = &["ID", "DISPLAY NAME", "FILTER", "ORGANIZATIONS"];
    fn row(&self) -> Vec<String> {
        vec![
            opt(&self.id),
            self.display_name.clone(),
            self.filter.clone(),
            self.organizations.as_deref().unwrap_or_default().join(","),
        ]
    }
}

impl Tabular for DeviceTemplate {
    const HEADER: &'static [&'static str] = &["ID", "DISPLAY NAME", "TYPES"];
    fn row(&self) -> Vec<String> {
        vec![opt(&self.id), opt(&self.display_name), self.types.join(",")]
    }
}

fn cert_state(c: &Option<SigningX509Certificate>) -> String {
    match c {
        None => "-".into(),
        Some(c) => {
            let tp = c
                .info
                .as_ref()
                .map(|i| i.sha1_thumbprint.as_str())
                .unwrap_or("?");
            format!(
                "{} {tp}",
                if c.verified { "verified" } else { "unverified" }
            )
        }
    }
}

impl Tabular for EnrollmentGroup {
    const HEADER: &'static [&'static str] = &[
        "ID",
        "DISPLAY NAME",
        "TYPE",
        "ATTESTATION",
        "ENABLED",
        "PRIMARY",
        "SECONDARY",
    ];
    fn row(&self) -> Vec<String> {
        let kind = match self.group_type {
            crate::central::models::EnrollmentGroupType::Iot => "iot",
            crate::central::models::EnrollmentGroupType::IotEdge => "iotEdge",
        };
        let (att, primary, secondary) = match &self.attestation {
            GroupAttestation::SymmetricKey { .. } => ("symmetricKey", "-".into(), "-".into()),
            GroupAttestation::X509 { x509 } => {
                let certs = x509.as_ref().and_then(|x| x.signing_certificates.as_ref());
                (
                    "x509",
                    cert_state(&certs.and_then(|c| c.primary.clone())),
                    cert_state(&certs.and_then(|c| c.secondary.clone())),
                )
            }
        };
        vec![
            opt(&self.id),
            self.display_name.clone(),
            kind.into(),
            att.into(),
            flag(self.enabled.or(Some(true))),
            primary,
            secondary,
        ]
    }
}

/// Rows of a signing certificate (`ENTRY VERIFIED SHA1`).
pub fn certificate_row(entry: &str, c: &SigningX509Certificate) -> Vec<String> {
    vec![
        entry.to_owned(),
        flag(Some(c.verified)),
        c.info
            .as_ref()
            .map(|i| i.sha1_thumbprint.clone())
            .unwrap_or_default(),
    ]
}

fn x509_rows(rows: &mut Vec<Vec<String>>, x: &X509) {
    if let Some(certs) = &x.client_certificates {
        let tp = |c: &crate::central::models::X509Certificate| {
            c.info
                .as_ref()
                .map(|i| i.sha1_thumbprint.clone())
                .unwrap_or_else(|| "(no thumbprint)".into())
        };
        rows.push(vec!["x509 primary".into(), tp(&certs.primary)]);
        if let Some(s) = &certs.secondary {
            rows.push(vec!["x509 secondary".into(), tp(s)]);
        }
    }
}

/// FIELD/VALUE rows of device credentials (keys included: that is what the command is for).
pub fn credential_rows(c: &DeviceCredentials) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["idScope".into(), c.id_scope.clone()]];
    if let Some(k) = &c.symmetric_key {
        rows.push(vec!["primaryKey".into(), k.primary_key.expose().to_owned()]);
        rows.push(vec![
            "secondaryKey".into(),
            k.secondary_key.expose().to_owned(),
        ]);
    }
    if let Some(x) = &c.x509 {
        x509_rows(&mut rows, x);
    }
    if let Some(t) = &c.tpm {
        rows.push(vec!["tpm endorsementKey".into(), t.endorsement_key.clone()]);
    }
    rows
}

/// FIELD/VALUE rows of an individual attestation.
pub fn attestation_rows(a: &Attestation) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    match a {
        Attestation::SymmetricKey { symmetric_key } => {
            rows.push(vec!["type".into(), "symmetricKey".into()]);
            rows.push(vec![
                "primaryKey".into(),
                symmetric_key.primary_key.expose().to_owned(),
            ]);
            rows.push(vec![
                "secondaryKey".into(),
                symmetric_key.secondary_key.expose().to_owned(),
            ]);
        }
        Attestation::X509 { x509 } => {
            rows.push(vec!["type".into(), "x509".into()]);
            x509_rows(&mut rows, x509);
        }
        Attestation::Tpm { tpm } => {
            rows.push(vec!["type".into(), "tpm".into()]);
            rows.push(vec!["endorsementKey".into(), tpm.endorsement_key.clone()]);
        }
    }
    rows
}
