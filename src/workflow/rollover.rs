//! CA rollover of an X.509 enrollment group, as three idempotent phases over the group's two
//! certificate slots: **stage** the new CA into the free slot (proof of possession),
//! **promote** it to primary with the old CA secondary, **retire** the old CA.
//!
//! Each phase reads the slots (and the bridge group, below), works out from that state alone
//! what is left to do as a [`Plan`] of single state changes, and refuses a state it does not
//! start from with a [`RolloverError::WrongState`] that says what is wrong and which phase
//! comes next, instead of guessing. A rerun after a crash or a partial failure finds the
//! same state and plans only what is left.
//!
//! Why promote needs a bridge: the devices of both CAs must keep registering through
//! promote, so at every moment both CAs must sit verified in some enrollment group. The
//! service has no swap: a PUT of a slot replaces it. From primary = old, secondary = new,
//! every single PUT replaces one of the two CAs, so no order of calls on the group's two
//! slots keeps both present. Promote therefore first puts the old CA, verified, into a
//! bridge group `<group>-rollover` (same type, enabled), then replaces the primary with the
//! new CA (its devices keep the secondary meanwhile), then the secondary with the old CA (its
//! devices keep the bridge meanwhile), and deletes the bridge last. The certificates' content
//! comes from the CA files (the service never returns it), and each upload is proved with the
//! CA's key unless the user self-attests (`verified_upload`).

use super::onboard::{self, OnboardError, Step};
use crate::central::models::{EnrollmentGroup, EnrollmentGroupType, GroupAttestation};
use crate::central::{CertificateEntry, Client};
use crate::cert::Authority;
use serde::Serialize;

/// A slot as the service shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    /// SHA-1 thumbprint (uppercase hex).
    pub sha1: String,
    /// Whether proof of possession (or self-attestation) verified it.
    pub verified: bool,
}

/// The X.509 state of a group (and of its bridge group) that the phases start from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Slots {
    /// The group.
    pub group: String,
    /// `iot` or `iotEdge`.
    pub group_type: EnrollmentGroupType,
    /// The primary slot.
    pub primary: Option<Slot>,
    /// The secondary slot.
    pub secondary: Option<Slot>,
    /// The bridge group's primary slot: `None` when there is no bridge group,
    /// `Some(None)` when it exists with an empty primary slot.
    pub bridge: Option<Option<Slot>>,
}

/// Which CA an action concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Which {
    /// The CA the group rolls over to (`--ca`).
    New,
    /// The CA the group rolls over from (`--old-ca`).
    Old,
}

/// One state change of a phase: each is one call that changes what DPS accepts (proof of
/// possession is three calls, of which only the last changes anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Create the bridge group (x509, same type, enabled, no certificate yet).
    CreateBridge {
        /// Its id.
        group: String,
    },
    /// PUT a CA into a slot (self-attested as verified when `verified`).
    Upload {
        /// The group.
        group: String,
        /// The slot.
        entry: String,
        /// Which CA.
        ca: Which,
        /// Uploaded as verified (no proof of possession).
        verified: bool,
    },
    /// Proof of possession of the CA in a slot (verification code, certificate, verify).
    Prove {
        /// The group.
        group: String,
        /// The slot.
        entry: String,
        /// Which CA.
        ca: Which,
    },
    /// DELETE a slot.
    RemoveCa {
        /// The group.
        group: String,
        /// The slot.
        entry: String,
    },
    /// DELETE the bridge group.
    DeleteBridge {
        /// Its id.
        group: String,
    },
}

impl Action {
    /// One line for the user.
    pub fn describe(&self) -> String {
        let who = |w: &Which| match w {
            Which::New => "the new CA",
            Which::Old => "the old CA",
        };
        match self {
            Action::CreateBridge { group } => format!(
                "create bridge group {group} (x509, enabled) to hold the old CA while the slots change"
            ),
            Action::Upload {
                group,
                entry,
                ca,
                verified,
            } => format!(
                "put {} into the {entry} slot of {group}{}",
                who(ca),
                if *verified {
                    " as verified (self-attested, no proof of possession)"
                } else {
                    ""
                }
            ),
            Action::Prove { group, entry, ca } => format!(
                "prove possession of {}'s key for the {entry} slot of {group}",
                who(ca)
            ),
            Action::RemoveCa { group, entry } => {
                format!("remove the CA of the {entry} slot of {group}")
            }
            Action::DeleteBridge { group } => format!("delete bridge group {group}"),
        }
    }
}

/// What a phase will do, in order (empty: nothing is left to do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The phase.
    pub phase: &'static str,
    /// The state it starts from.
    pub from: Slots,
    /// What it does.
    pub actions: Vec<Action>,
    /// Why there is nothing to do, when there is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A phase failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloverError {
    /// The group is not in a state this phase starts from.
    #[error("{0}")]
    WrongState(String),
    /// An IoT Central call failed.
    #[error("{what}")]
    Central {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<crate::central::Error>,
    },
    /// An upload or a proof of possession failed.
    #[error(transparent)]
    Onboard(#[from] OnboardError),
}

fn central(what: String) -> impl FnOnce(crate::central::Error) -> RolloverError {
    move |source| RolloverError::Central {
        what,
        source: Box::new(source),
    }
}

/// The id of the bridge group promote uses for `group`.
pub fn bridge_id(group: &str) -> String {
    format!("{group}-rollover")
}

async fn read_slot(
    client: &Client,
    group: &str,
    entry: CertificateEntry,
) -> Result<Option<Slot>, RolloverError> {
    match client.get_enrollment_group_certificate(group, entry).await {
        Ok(c) => Ok(c.info.map(|i| Slot {
            sha1: i.sha1_thumbprint.to_uppercase(),
            verified: c.verified,
        })),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(central(format!(
            "cannot read the {entry} CA of group {group}"
        ))(e)),
    }
}

/// Reads the slots of `group` and of its bridge group.
pub async fn read_slots(client: &Client, group: &str) -> Result<Slots, RolloverError> {
    let g = client
        .get_enrollment_group(group)
        .await
        .map_err(central(format!("cannot read enrollment group {group}")))?;
    if !matches!(g.attestation, GroupAttestation::X509 { .. }) {
        return Err(RolloverError::WrongState(format!(
            "enrollment group {group} uses symmetric keys: only an x509 group has CA slots to roll over"
        )));
    }
    let bridge_name = bridge_id(group);
    let bridge = match client.get_enrollment_group(&bridge_name).await {
        Ok(_) => Some(read_slot(client, &bridge_name, CertificateEntry::Primary).await?),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            return Err(central(format!("cannot read bridge group {bridge_name}"))(
                e,
            ))
        }
    };
    Ok(Slots {
        group: group.to_owned(),
        group_type: g.group_type,
        primary: read_slot(client, group, CertificateEntry::Primary).await?,
        secondary: read_slot(client, group, CertificateEntry::Secondary).await?,
        bridge,
    })
}

fn show(slot: &Option<Slot>, new: &str, old: Option<&str>) -> String {
    match slot {
        None => "empty".into(),
        Some(s) => {
            let name = if s.sha1 == new {
                "the new CA"
            } else if Some(s.sha1.as_str()) == old {
                "the old CA"
            } else {
                "another CA"
            };
            format!(
                "{name} (SHA-1 {}, {})",
                s.sha1,
                if s.verified { "verified" } else { "unverified" }
            )
        }
    }
}

fn state_line(s: &Slots, new: &str, old: Option<&str>) -> String {
    format!(
        "group {} has primary = {}, secondary = {}",
        s.group,
        show(&s.primary, new, old),
        show(&s.secondary, new, old)
    )
}

fn is(slot: &Option<Slot>, sha1: &str) -> bool {
    slot.as_ref().is_some_and(|s| s.sha1 == sha1)
}

fn verified(slot: &Option<Slot>, sha1: &str) -> bool {
    slot.as_ref().is_some_and(|s| s.sha1 == sha1 && s.verified)
}

fn entry_name(e: CertificateEntry) -> String {
    e.as_str().to_owned()
}

fn upload_and_prove(
    actions: &mut Vec<Action>,
    group: &str,
    entry: CertificateEntry,
    ca: Which,
    verified_upload: bool,
) {
    actions.push(Action::Upload {
        group: group.to_owned(),
        entry: entry_name(entry),
        ca,
        verified: verified_upload,
    });
    if !verified_upload {
        actions.push(Action::Prove {
            group: group.to_owned(),
            entry: entry_name(entry),
            ca,
        });
    }
}

/// The plan of `stage`: the new CA (SHA-1 `new`) into the free slot, verified.
pub fn plan_stage(s: &Slots, new: &str, verified_upload: bool) -> Result<Plan, RolloverError> {
    use CertificateEntry::{Primary, Secondary};
    let wrong =
        |why: String| RolloverError::WrongState(format!("{}: {why}", state_line(s, new, None)));
    let mut plan = Plan {
        phase: "stage",
        from: s.clone(),
        actions: Vec::new(),
        note: None,
    };
    if s.bridge.is_some() {
        return Err(wrong(format!(
            "bridge group {} exists, so a promote did not finish: run `iotc rollover promote` again",
            bridge_id(&s.group)
        )));
    }
    if is(&s.primary, new) {
        return Err(wrong(if s.secondary.is_some() {
            "this CA is primary already, with another CA in the secondary slot: after a promote \
             the next phase is `iotc rollover retire`; to stage another CA, retire one first"
                .into()
        } else {
            "the new CA is the group's only CA: there is nothing to stage".into()
        }));
    }
    if let Some(sec) = s.secondary.as_ref().filter(|c| c.sha1 == new) {
        if s.primary.is_none() {
            return Err(wrong(
                "the new CA is the group's only CA: there is nothing to stage".into(),
            ));
        }
        if !sec.verified {
            plan.actions.push(Action::Prove {
                group: s.group.clone(),
                entry: entry_name(Secondary),
                ca: Which::New,
            });
        } else {
            plan.note = Some("the new CA is staged and verified already".into());
        }
        return Ok(plan);
    }
    let free = match (&s.primary, &s.secondary) {
        (None, None) => {
            return Err(wrong(
                "there is no current CA to roll over from: set the group up with `iotc onboard x509`".into(),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(wrong(
                "both slots hold other CAs, so no slot is free: finish the rollover in progress (`iotc rollover retire`) first".into(),
            ))
        }
        (Some(cur), None) | (None, Some(cur)) if !cur.verified => {
            return Err(wrong(format!(
                "the current CA (SHA-1 {}) is not verified: finish its proof of possession (`iotc onboard x509`) before rolling it over",
                cur.sha1
            )))
        }
        (Some(_), None) => Secondary,
        (None, Some(_)) => Primary,
    };
    upload_and_prove(
        &mut plan.actions,
        &s.group,
        free,
        Which::New,
        verified_upload,
    );
    Ok(plan)
}

/// The plan of `promote`: primary = the new CA, secondary = the old CA, both verified, with
/// the bridge group holding the old CA while the slots change.
pub fn plan_promote(
    s: &Slots,
    new: &str,
    old: &str,
    verified_upload: bool,
) -> Result<Plan, RolloverError> {
    use CertificateEntry::{Primary, Secondary};
    let wrong = |why: String| {
        RolloverError::WrongState(format!("{}: {why}", state_line(s, new, Some(old))))
    };
    if new == old {
        return Err(wrong("--ca and --old-ca are the same certificate".into()));
    }
    let bridge = bridge_id(&s.group);
    let mut plan = Plan {
        phase: "promote",
        from: s.clone(),
        actions: Vec::new(),
        note: None,
    };
    // The bridge must hold the old CA, verified, before a slot holding it is replaced.
    let bridge_actions = |actions: &mut Vec<Action>| -> Result<(), RolloverError> {
        match &s.bridge {
            None => {
                actions.push(Action::CreateBridge {
                    group: bridge.clone(),
                });
                upload_and_prove(actions, &bridge, Primary, Which::Old, verified_upload);
            }
            Some(None) => upload_and_prove(actions, &bridge, Primary, Which::Old, verified_upload),
            Some(Some(b)) if b.sha1 == old && b.verified => {}
            Some(Some(b)) if b.sha1 == old => actions.push(Action::Prove {
                group: bridge.clone(),
                entry: entry_name(Primary),
                ca: Which::Old,
            }),
            Some(Some(b)) => {
                return Err(wrong(format!(
                    "bridge group {bridge} holds another CA (SHA-1 {}): delete it (`iotc enrollment-group delete {bridge}`) and rerun promote",
                    b.sha1
                )))
            }
        }
        Ok(())
    };
    let (p, sec) = (&s.primary, &s.secondary);
    if verified(p, new) && is(sec, old) {
        if !verified(sec, old) {
            plan.actions.push(Action::Prove {
                group: s.group.clone(),
                entry: entry_name(Secondary),
                ca: Which::Old,
            });
        }
    } else if verified(sec, new) && (is(p, new) || verified(p, old)) {
        bridge_actions(&mut plan.actions)?;
        if verified(p, old) {
            upload_and_prove(
                &mut plan.actions,
                &s.group,
                Primary,
                Which::New,
                verified_upload,
            );
        } else if !verified(p, new) {
            plan.actions.push(Action::Prove {
                group: s.group.clone(),
                entry: entry_name(Primary),
                ca: Which::New,
            });
        }
        upload_and_prove(
            &mut plan.actions,
            &s.group,
            Secondary,
            Which::Old,
            verified_upload,
        );
    } else if is(p, old) && !verified(p, old) {
        return Err(wrong(
            "the old CA is not verified: there is nothing safe to promote from".into(),
        ));
    } else if verified(p, old) && is(sec, new) {
        return Err(wrong(
            "the new CA is staged but not verified: finish it with `iotc rollover stage`".into(),
        ));
    } else if verified(p, old) && sec.is_none() {
        return Err(wrong(
            "nothing is staged: run `iotc rollover stage` first".into(),
        ));
    } else if is(p, new) && sec.is_none() {
        return Err(wrong(
            "the new CA is the group's only CA: the rollover is complete (retired); there is nothing to promote".into(),
        ));
    } else {
        return Err(wrong(
            "promote starts from primary = the old CA and secondary = the new CA, both verified (after `iotc rollover stage`)".into(),
        ));
    }
    if s.bridge.is_some()
        || plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateBridge { .. }))
    {
        plan.actions.push(Action::DeleteBridge { group: bridge });
    }
    if plan.actions.is_empty() {
        plan.note = Some("promoted already: the new CA is primary, the old CA secondary".into());
    }
    Ok(plan)
}

/// The plan of `retire`: the old CA leaves the group (after promote). `stranded` are the
/// journal devices whose current certificate does not chain to the new CA: refused unless
/// `force`.
pub fn plan_retire(
    s: &Slots,
    new: &str,
    stranded: &[String],
    force: bool,
) -> Result<Plan, RolloverError> {
    use CertificateEntry::Secondary;
    let wrong =
        |why: String| RolloverError::WrongState(format!("{}: {why}", state_line(s, new, None)));
    if s.bridge.is_some() {
        return Err(wrong(format!(
            "bridge group {} exists, so promote did not finish: run `iotc rollover promote` again",
            bridge_id(&s.group)
        )));
    }
    let mut plan = Plan {
        phase: "retire",
        from: s.clone(),
        actions: Vec::new(),
        note: None,
    };
    if !is(&s.primary, new) {
        return Err(wrong(if is(&s.secondary, new) {
            "the new CA is not primary yet: run `iotc rollover promote` first".into()
        } else {
            "the new CA is in neither slot: retire follows stage and promote of that CA".into()
        }));
    }
    if !verified(&s.primary, new) {
        return Err(wrong(
            "the new CA is primary but not verified: rerun `iotc rollover promote`".into(),
        ));
    }
    if s.secondary.is_none() {
        plan.note = Some("retired already: the new CA is the group's only CA".into());
        return Ok(plan);
    }
    if !stranded.is_empty() && !force {
        let shown: Vec<&str> = stranded.iter().take(10).map(String::as_str).collect();
        return Err(RolloverError::WrongState(format!(
            "{} device(s) of the journal(s) hold a certificate that does not chain to the new CA \
             and would be locked out once the old CA leaves the group ({}{}): renew them first \
             (`iotc renew --journal J --ca NEW_PREFIX --out DIR`), or pass --force to retire anyway",
            stranded.len(),
            shown.join(", "),
            if stranded.len() > shown.len() { ", …" } else { "" }
        )));
    }
    plan.actions.push(Action::RemoveCa {
        group: s.group.clone(),
        entry: entry_name(Secondary),
    });
    Ok(plan)
}

fn entry_of(name: &str) -> CertificateEntry {
    if name == "primary" {
        CertificateEntry::Primary
    } else {
        CertificateEntry::Secondary
    }
}

/// Performs one action: the CA files give the certificates and prove possession (`new` and
/// `old` are needed only by the actions that upload or prove them).
pub async fn perform(
    client: &Client,
    action: &Action,
    group_type: EnrollmentGroupType,
    new: Option<&Authority>,
    old: Option<&Authority>,
) -> Result<Option<Step>, RolloverError> {
    let ca = |w: &Which| -> Result<&Authority, RolloverError> {
        match w {
            Which::New => new.ok_or_else(|| {
                RolloverError::WrongState("this step needs the new CA's key (--ca)".into())
            }),
            Which::Old => old.ok_or_else(|| {
                RolloverError::WrongState("this step needs the old CA (--old-ca)".into())
            }),
        }
    };
    match action {
        Action::CreateBridge { group } => {
            let body = EnrollmentGroup {
                id: None,
                display_name: format!("rollover bridge ({group})"),
                enabled: Some(true),
                group_type,
                attestation: GroupAttestation::X509 { x509: None },
                etag: None,
                id_scope: None,
            };
            client
                .create_enrollment_group(group, &body)
                .await
                .map_err(central(format!("cannot create bridge group {group}")))?;
            Ok(None)
        }
        Action::Upload {
            group,
            entry,
            ca: w,
            verified,
        } => {
            onboard::upload_ca(client, group, entry_of(entry), ca(w)?, *verified).await?;
            Ok(None)
        }
        Action::Prove {
            group,
            entry,
            ca: w,
        } => Ok(Some(
            onboard::prove_possession(client, group, entry_of(entry), ca(w)?).await?,
        )),
        Action::RemoveCa { group, entry } => {
            match client
                .delete_enrollment_group_certificate(group, entry_of(entry))
                .await
            {
                Ok(()) => Ok(None),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(central(format!(
                    "cannot remove the {entry} CA of group {group}"
                ))(e)),
            }
        }
        Action::DeleteBridge { group } => match client.delete_enrollment_group(group).await {
            Ok(()) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(central(format!("cannot delete bridge group {group}"))(e)),
        },
    }
}

/// The journal devices whose current certificate does not chain to `ca` (at this moment):
/// those a group that trusts only `ca` would refuse. Expired certificates are refused anyway
/// and count too.
pub fn not_chaining_to(certs: &[super::ledger::IssuedCert], ca_der: &[u8]) -> Vec<String> {
    let now = time::OffsetDateTime::now_utc();
    let anchors = [ca_der.to_vec()];
    certs
        .iter()
        .filter(|c| {
            let chain = crate::cert::parse_pem_certs(
                c.chain_pem.as_deref().unwrap_or(&c.cert_pem).as_bytes(),
            )
            .unwrap_or_default();
            match chain.split_first() {
                Some((leaf, rest)) => crate::cert::verify_chain(leaf, rest, &anchors, now).is_err(),
                None => true,
            }
        })
        .map(|c| c.device_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "NNNN";
    const OLD: &str = "OOOO";

    fn slot(sha1: &str, verified: bool) -> Option<Slot> {
        Some(Slot {
            sha1: sha1.into(),
            verified,
        })
    }

    fn slots(p: Option<Slot>, s: Option<Slot>, bridge: Option<Option<Slot>>) -> Slots {
        Slots {
            group: "g".into(),
            group_type: EnrollmentGroupType::Iot,
            primary: p,
            secondary: s,
            bridge,
        }
    }

    fn refused(r: Result<Plan, RolloverError>, says: &str) {
        match r {
            Err(RolloverError::WrongState(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("expected a refusal saying {says:?}, got {other:?}"),
        }
    }

    fn kinds(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::CreateBridge { .. } => "bridge".to_string(),
                Action::Upload {
                    group, entry, ca, ..
                } => format!("put {group}/{entry} {ca:?}"),
                Action::Prove { group, entry, ca } => format!("prove {group}/{entry} {ca:?}"),
                Action::RemoveCa { group, entry } => format!("remove {group}/{entry}"),
                Action::DeleteBridge { .. } => "unbridge".to_string(),
            })
            .collect()
    }

    #[test]
    fn stage_goes_into_the_free_slot_and_refuses_every_other_start() {
        let p = plan_stage(&slots(slot(OLD, true), None, None), NEW, false).unwrap();
        assert_eq!(kinds(&p), ["put g/secondary New", "prove g/secondary New"]);
        let p = plan_stage(&slots(None, slot(OLD, true), None), NEW, true).unwrap();
        assert_eq!(kinds(&p), ["put g/primary New"]);
        // Resumed: only what is left.
        let p = plan_stage(&slots(slot(OLD, true), slot(NEW, false), None), NEW, false).unwrap();
        assert_eq!(kinds(&p), ["prove g/secondary New"]);
        let p = plan_stage(&slots(slot(OLD, true), slot(NEW, true), None), NEW, false).unwrap();
        assert!(p.actions.is_empty() && p.note.is_some());
        refused(
            plan_stage(&slots(None, None, None), NEW, false),
            "onboard x509",
        );
        refused(
            plan_stage(&slots(slot(OLD, false), None, None), NEW, false),
            "not verified",
        );
        refused(
            plan_stage(
                &slots(slot(OLD, true), slot("XXXX", true), None),
                NEW,
                false,
            ),
            "no slot is free",
        );
        refused(
            plan_stage(&slots(slot(NEW, true), None, None), NEW, false),
            "only CA",
        );
        refused(
            plan_stage(&slots(slot(NEW, true), slot(OLD, true), None), NEW, false),
            "retire",
        );
        refused(
            plan_stage(&slots(slot(OLD, true), None, Some(None)), NEW, false),
            "promote did not finish",
        );
    }

    #[test]
    fn promote_bridges_the_old_ca_before_any_slot_that_holds_it_changes() {
        let p = plan_promote(
            &slots(slot(OLD, true), slot(NEW, true), None),
            NEW,
            OLD,
            false,
        )
        .unwrap();
        assert_eq!(
            kinds(&p),
            [
                "bridge",
                "put g-rollover/primary Old",
                "prove g-rollover/primary Old",
                "put g/primary New",
                "prove g/primary New",
                "put g/secondary Old",
                "prove g/secondary Old",
                "unbridge"
            ]
        );
        // Every resumed state plans only what is left, and the bridge is never skipped while
        // a slot holding the old CA is still to change.
        let p = plan_promote(
            &slots(slot(NEW, false), slot(NEW, true), Some(slot(OLD, true))),
            NEW,
            OLD,
            false,
        )
        .unwrap();
        assert_eq!(
            kinds(&p),
            [
                "prove g/primary New",
                "put g/secondary Old",
                "prove g/secondary Old",
                "unbridge"
            ]
        );
        let p = plan_promote(
            &slots(slot(NEW, true), slot(OLD, false), Some(slot(OLD, true))),
            NEW,
            OLD,
            false,
        )
        .unwrap();
        assert_eq!(kinds(&p), ["prove g/secondary Old", "unbridge"]);
        let p = plan_promote(
            &slots(slot(NEW, true), slot(OLD, true), Some(slot(OLD, true))),
            NEW,
            OLD,
            false,
        )
        .unwrap();
        assert_eq!(kinds(&p), ["unbridge"]);
        let p = plan_promote(
            &slots(slot(NEW, true), slot(OLD, true), None),
            NEW,
            OLD,
            false,
        )
        .unwrap();
        assert!(p.actions.is_empty() && p.note.is_some());
        let p = plan_promote(
            &slots(slot(OLD, true), slot(NEW, true), Some(slot(OLD, false))),
            NEW,
            OLD,
            false,
        )
        .unwrap();
        assert_eq!(kinds(&p)[0], "prove g-rollover/primary Old");
        refused(
            plan_promote(&slots(slot(OLD, true), None, None), NEW, OLD, false),
            "stage` first",
        );
        refused(
            plan_promote(
                &slots(slot(OLD, true), slot(NEW, false), None),
                NEW,
                OLD,
                false,
            ),
            "not verified",
        );
        refused(
            plan_promote(&slots(slot(NEW, true), None, None), NEW, OLD, false),
            "complete",
        );
        refused(
            plan_promote(
                &slots(slot("XXXX", true), slot(NEW, true), None),
                NEW,
                OLD,
                false,
            ),
            "promote starts from",
        );
        refused(
            plan_promote(
                &slots(slot(OLD, true), slot(NEW, true), Some(slot("XXXX", true))),
                NEW,
                OLD,
                false,
            ),
            "holds another CA",
        );
        refused(
            plan_promote(
                &slots(slot(OLD, true), slot(NEW, true), None),
                NEW,
                NEW,
                false,
            ),
            "same certificate",
        );
    }

    #[test]
    fn retire_follows_promote_and_refuses_while_devices_would_be_locked_out() {
        let promoted = slots(slot(NEW, true), slot(OLD, true), None);
        let p = plan_retire(&promoted, NEW, &[], false).unwrap();
        assert_eq!(kinds(&p), ["remove g/secondary"]);
        refused(plan_retire(&promoted, NEW, &["d1".into()], false), "d1");
        assert_eq!(
            plan_retire(&promoted, NEW, &["d1".into()], true)
                .unwrap()
                .actions
                .len(),
            1
        );
        let p = plan_retire(&slots(slot(NEW, true), None, None), NEW, &[], false).unwrap();
        assert!(p.actions.is_empty() && p.note.is_some());
        refused(
            plan_retire(
                &slots(slot(OLD, true), slot(NEW, true), None),
                NEW,
                &[],
                false,
            ),
            "promote` first",
        );
        refused(
            plan_retire(
                &slots(slot(NEW, false), slot(OLD, true), None),
                NEW,
                &[],
                false,
            ),
            "not verified",
        );
        refused(
            plan_retire(&slots(slot(OLD, true), None, None), NEW, &[], false),
            "neither slot",
        );
        refused(
            plan_retire(
                &slots(slot(NEW, true), slot(OLD, true), Some(None)),
                NEW,
                &[],
                false,
            ),
            "promote did not finish",
        );
    }
}
