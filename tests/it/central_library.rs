//! The `central` library against the real emulator over TLS on loopback: every operation of
//! every resource, paging across many pages, and the typed errors.

use crate::common_central;

use common_central::{root_ca, Emu};
use iotc::central::models::{
    roles, ApiToken, Attestation, Device, DeviceGroup, DeviceTemplate, EnrollmentGroup,
    EnrollmentGroupType, GroupAttestation, Organization, RoleAssignment, SigningX509Certificate,
    SymmetricKey, User, UserKind, X509Certificate, X509Certificates, X509VerificationCertificate,
    X509,
};
use iotc::central::{CertificateEntry, Client, ClientOptions, Credential, Error, ListOptions};
use iotc::secret::Secret;
use serde_json::json;
use std::collections::BTreeSet;

fn org(name: &str, parent: Option<&str>) -> Organization {
    Organization {
        id: None,
        display_name: Some(name.into()),
        parent: parent.map(Into::into),
    }
}

fn role(r: &str, org: Option<&str>) -> Vec<RoleAssignment> {
    vec![RoleAssignment {
        role: r.into(),
        organization: org.map(Into::into),
    }]
}

fn device(name: &str, simulated: bool) -> Device {
    Device {
        display_name: Some(name.into()),
        simulated: Some(simulated),
        enabled: Some(true),
        ..Default::default()
    }
}

fn assert_not_found(e: Error, operation: &str) {
    assert!(e.is_not_found(), "expected 404, got {e}");
    assert_eq!(e.operation(), Some(operation));
    assert!(!e.code().unwrap_or_default().is_empty(), "{e}");
    assert!(e.request_id().is_some(), "no requestId in {e}");
    let line = e.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("requestId"), "{line}");
}

#[test]
fn organizations_roles_users_and_api_tokens() {
    let emu = Emu::start();
    let c = emu.client();
    emu.block_on(async {
        // organizations
        let made = c
            .create_organization("seattle", &org("Seattle", None))
            .await
            .unwrap();
        assert_eq!(made.id.as_deref(), Some("seattle"));
        c.create_organization("redmond", &org("Redmond", Some("seattle")))
            .await
            .unwrap();
        let got = c.get_organization("redmond").await.unwrap();
        assert_eq!(got.parent.as_deref(), Some("seattle"));
        let up = c
            .update_organization("redmond", &json!({"displayName": "Redmond WA"}))
            .await
            .unwrap();
        assert_eq!(up.display_name.as_deref(), Some("Redmond WA"));
        let ids: Vec<_> = c
            .list_organizations()
            .collect_all()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|o| o.id)
            .collect();
        assert_eq!(ids, ["seattle", "redmond"], "each listed once");
        c.delete_organization("redmond").await.unwrap();
        assert_not_found(
            c.get_organization("redmond").await.unwrap_err(),
            "Organizations_Get",
        );

        // roles
        let all = c.list_roles().collect_all().await.unwrap();
        assert!(all
            .iter()
            .any(|r| r.id.as_deref() == Some(roles::ADMINISTRATOR)));
        let op = c.get_role(roles::OPERATOR).await.unwrap();
        assert_eq!(op.id.as_deref(), Some(roles::OPERATOR));
        assert!(op.display_name.is_some());

        // users: email, service principal, AD group
        let alice = User {
            id: None,
            kind: UserKind::Email {
                email: "alice@contoso.com".into(),
            },
            roles: role(roles::OPERATOR, None),
        };
        let made = c.create_user("alice", &alice).await.unwrap();
        assert_eq!(made.kind, alice.kind);
        let sp = User {
            id: None,
            kind: UserKind::ServicePrincipal {
                tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
                object_id: "a8f1fe36-3ea5-4f2a-8ad8-1a2e0f3b6a2b".into(),
            },
            roles: role(roles::ORG_ADMIN, Some("seattle")),
        };
        c.create_user("ci-bot", &sp).await.unwrap();
        let group = User {
            id: None,
            kind: UserKind::AdGroup {
                tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
                object_id: "0b0d9a8e-5b0a-4e39-8bd5-2f4b1f0b1c2d".into(),
            },
            roles: role(roles::BUILDER, None),
        };
        c.create_user("ops-team", &group).await.unwrap();
        let got = c.get_user("ci-bot").await.unwrap();
        assert_eq!(got.kind, sp.kind);
        assert_eq!(got.roles, sp.roles);
        let up = c
            .update_user(
                "alice",
                &json!({"roles": [{"role": roles::BUILDER, "organization": "seattle"}]}),
            )
            .await
            .unwrap();
        assert_eq!(up.roles, role(roles::BUILDER, Some("seattle")));
        let users = c
            .list_users(&ListOptions::default().max_page_size(2))
            .collect_all()
            .await
            .unwrap();
        let ids: Vec<_> = users.into_iter().filter_map(|u| u.id).collect();
        for id in ["alice", "ci-bot", "ops-team"] {
            assert_eq!(
                ids.iter().filter(|i| *i == id).count(),
                1,
                "{id} listed once across the pages: {ids:?}"
            );
        }
        c.delete_user("ops-team").await.unwrap();
        assert_not_found(c.get_user("ops-team").await.unwrap_err(), "Users_Get");

        // API tokens: the value comes once, works, and stops working once deleted
        let req = ApiToken {
            id: None,
            roles: role(roles::OPERATOR, None),
            token: None,
            expiry: None,
        };
        let made = c.create_api_token("line-1", &req).await.unwrap();
        let value = made.token.clone().expect("token value on creation");
        assert!(value.expose().starts_with("SharedAccessSignature "));
        let listed = c.list_api_tokens().collect_all().await.unwrap();
        let mine = listed
            .iter()
            .find(|t| t.id.as_deref() == Some("line-1"))
            .expect("listed");
        assert!(mine.token.is_none(), "a list must never carry token values");
        let got = c.get_api_token("line-1").await.unwrap();
        assert!(got.token.is_none());
        assert_eq!(got.roles, req.roles);

        let as_operator = Client::new(
            &emu.api_url,
            Credential::api_token(value.expose()),
            Some(emu.options()),
        )
        .unwrap();
        as_operator
            .list_devices(&ListOptions::default())
            .collect_all()
            .await
            .expect("an operator token reads devices");
        c.delete_api_token("line-1").await.unwrap();
        let e = as_operator
            .list_devices(&ListOptions::default())
            .collect_all()
            .await
            .unwrap_err();
        assert!(matches!(e.status(), Some(401 | 403)), "{e}");
        assert!(!e.is_retryable());
        assert_not_found(
            c.get_api_token("line-1").await.unwrap_err(),
            "ApiTokens_Get",
        );
    });
}

#[test]
fn devices_credentials_and_attestation() {
    let emu = Emu::start();
    let c = emu.client();
    let ca = root_ca();
    let leaf = ca
        .issue_device(
            &iotc::ids::RegistrationId::new("dev-x509").unwrap(),
            &Default::default(),
        )
        .unwrap();
    emu.block_on(async {
        c.create_organization("seattle", &org("Seattle", None))
            .await
            .unwrap();
        let mut d = device("Thermostat 1", true);
        d.organizations = Some(vec!["seattle".into()]);
        let made = c.create_device("dev-1", &d).await.unwrap();
        assert_eq!(made.id.as_deref(), Some("dev-1"));
        assert_eq!(made.provisioned, Some(false));
        assert!(made.etag.is_some());
        let got = c.get_device("dev-1").await.unwrap();
        assert_eq!(got.organizations, Some(vec!["seattle".to_string()]));
        let up = c
            .update_device("dev-1", &json!({"enabled": false, "displayName": "Spare"}))
            .await
            .unwrap();
        assert_eq!(up.enabled, Some(false));
        assert_eq!(up.display_name.as_deref(), Some("Spare"));

        let creds = c.get_device_credentials("dev-1").await.unwrap();
        assert!(!creds.id_scope.is_empty());

        // symmetric key attestation
        let keys = SymmetricKey {
            primary_key: Secret::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            secondary_key: Secret::new("HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4="),
        };
        let set = c
            .set_device_attestation(
                "dev-1",
                &Attestation::SymmetricKey {
                    symmetric_key: keys.clone(),
                },
            )
            .await
            .unwrap();
        assert!(matches!(set, Attestation::SymmetricKey { .. }));
        match c.get_device_attestation("dev-1").await.unwrap() {
            Attestation::SymmetricKey { symmetric_key } => assert_eq!(symmetric_key, keys),
            other => panic!("unexpected {other:?}"),
        }
        let creds = c.get_device_credentials("dev-1").await.unwrap();
        assert_eq!(creds.symmetric_key, Some(keys));

        // X.509 attestation, then removal
        c.create_device("dev-x509", &device("X.509 device", false))
            .await
            .unwrap();
        let x509 = Attestation::X509 {
            x509: X509 {
                client_certificates: Some(X509Certificates {
                    primary: X509Certificate {
                        certificate: Some(iotc::cert::certificate_string(&leaf.cert_pem)),
                        info: None,
                    },
                    secondary: None,
                }),
            },
        };
        c.set_device_attestation("dev-x509", &x509).await.unwrap();
        match c.get_device_attestation("dev-x509").await.unwrap() {
            Attestation::X509 { x509 } => {
                let info = x509.client_certificates.unwrap().primary.info.unwrap();
                assert_eq!(
                    info.sha1_thumbprint,
                    iotc::cert::sha1_thumbprint(&leaf.cert_der)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        c.update_device_attestation(
            "dev-1",
            &json!({"symmetricKey": {"primaryKey": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                                     "secondaryKey": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}),
        )
        .await
        .unwrap();
        c.delete_device_attestation("dev-x509").await.unwrap();
        assert!(c.get_device_attestation("dev-x509").await.is_err());

        let all = c
            .list_devices(&ListOptions::default())
            .collect_all()
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        c.delete_device("dev-1").await.unwrap();
        assert_not_found(c.get_device("dev-1").await.unwrap_err(), "Devices_Get");
        let e = c.delete_device("dev-1").await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
    });
}

#[test]
fn device_groups_templates_and_filters() {
    let emu = Emu::start();
    let c = emu.client();
    emu.block_on(async {
        let template = DeviceTemplate {
            id: None,
            types: vec!["ModelDefinition".into(), "DeviceModel".into()],
            etag: None,
            display_name: Some("Thermostat".into()),
            description: None,
            capability_model: json!({"@id": "dtmi:contoso:Thermostat;1", "@type": "Interface",
                                     "contents": [], "@context": "dtmi:dtdl:context;2"}),
        };
        c.create_device_template("dtmi:contoso:Thermostat;1", &template)
            .await
            .unwrap();
        let got = c
            .get_device_template("dtmi:contoso:Thermostat;1")
            .await
            .unwrap();
        assert_eq!(got.id.as_deref(), Some("dtmi:contoso:Thermostat;1"));
        let listed = c
            .list_device_templates(&ListOptions::default())
            .collect_all()
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);

        for i in 0..5 {
            let mut d = device(&format!("Thermostat {i}"), i % 2 == 0);
            d.template = Some("dtmi:contoso:Thermostat;1".into());
            c.create_device(&format!("t-{i}"), &d).await.unwrap();
        }
        let group = DeviceGroup {
            display_name: "Simulated".into(),
            filter: "SELECT * FROM devices WHERE $simulated = true".into(),
            ..Default::default()
        };
        c.create_device_group("simulated", &group).await.unwrap();
        let got = c.get_device_group("simulated").await.unwrap();
        assert_eq!(got.filter, group.filter);
        // One member a page: a page served twice would show as a duplicate here.
        let members: Vec<_> = c
            .list_device_group_devices("simulated", &ListOptions::default().max_page_size(1))
            .collect_all()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|d| d.id)
            .collect();
        assert_eq!(members, ["t-0", "t-2", "t-4"]);
        let up = c
            .update_device_group("simulated", &json!({"description": "even ones"}))
            .await
            .unwrap();
        assert_eq!(up.description.as_deref(), Some("even ones"));
        let groups = c
            .list_device_groups(&ListOptions::default().max_page_size(10))
            .collect_all()
            .await
            .unwrap();
        assert_eq!(groups.len(), 1);

        // preview list options
        let sorted = c
            .list_devices(
                &ListOptions::default()
                    .filter("simulated eq false")
                    .orderby("displayName desc"),
            )
            .collect_all()
            .await
            .unwrap();
        let names: Vec<_> = sorted
            .iter()
            .filter_map(|d| d.display_name.clone())
            .collect();
        assert_eq!(names, vec!["Thermostat 3", "Thermostat 1"]);

        // options a list does not take are refused before sending
        let e = c
            .list_device_group_devices("simulated", &ListOptions::default().filter("x"))
            .collect_all()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = c
            .list_devices(&ListOptions::default().max_page_size(101))
            .collect_all()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        // a bad filter is the service's 400, kept typed
        let e = c
            .list_devices(&ListOptions::default().filter("nonsense eq eq"))
            .collect_all()
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");

        c.delete_device_group("simulated").await.unwrap();
        assert_not_found(
            c.get_device_group("simulated").await.unwrap_err(),
            "DeviceGroups_Get",
        );
        // The template's devices still use it: IoT Central refuses to delete it (409).
        let e = c
            .delete_device_template("dtmi:contoso:Thermostat;1")
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(409), "{e}");
    });
}

#[test]
fn enrollment_groups_and_proof_of_possession() {
    let emu = Emu::start();
    let c = emu.client();
    let ca = root_ca();
    let other_ca = root_ca();
    emu.block_on(async {
        let g = EnrollmentGroup {
            id: None,
            display_name: "Line 1".into(),
            enabled: Some(true),
            group_type: EnrollmentGroupType::Iot,
            attestation: GroupAttestation::X509 { x509: None },
            etag: None,
            id_scope: None,
        };
        let made = c.create_enrollment_group("line-1", &g).await.unwrap();
        assert_eq!(made.id.as_deref(), Some("line-1"));
        let sym = EnrollmentGroup {
            display_name: "Keys".into(),
            group_type: EnrollmentGroupType::IotEdge,
            attestation: GroupAttestation::SymmetricKey {
                symmetric_key: None,
            },
            ..g.clone()
        };
        let made = c.create_enrollment_group("keys", &sym).await.unwrap();
        match made.attestation {
            GroupAttestation::SymmetricKey { symmetric_key } => {
                assert!(symmetric_key.is_some(), "the service generates group keys")
            }
            other => panic!("{other:?}"),
        }
        let up = c
            .update_enrollment_group("keys", &json!({"enabled": false}))
            .await
            .unwrap();
        assert_eq!(up.enabled, Some(false));
        assert_eq!(
            c.list_enrollment_groups()
                .collect_all()
                .await
                .unwrap()
                .len(),
            2
        );

        // upload the CA unverified, prove possession, see it verified
        let entry = CertificateEntry::Primary;
        let cert = SigningX509Certificate {
            verified: false,
            certificate: Some(iotc::cert::certificate_string(ca.cert_pem())),
            info: None,
            etag: None,
        };
        let set = c
            .set_enrollment_group_certificate("line-1", entry, &cert)
            .await
            .unwrap();
        assert!(!set.verified);
        assert_eq!(
            set.info.unwrap().sha1_thumbprint,
            iotc::cert::sha1_thumbprint(ca.cert_der())
        );
        let code = c
            .generate_verification_code("line-1", entry)
            .await
            .unwrap()
            .verification_code;
        assert!(!code.is_empty());

        // a certificate signed by another key is refused, with the service's error kept
        let wrong = other_ca
            .issue_verification(&code, &Default::default())
            .unwrap();
        let e = c
            .verify_enrollment_group_certificate(
                "line-1",
                entry,
                &X509VerificationCertificate {
                    certificate: iotc::cert::certificate_string(&wrong.cert_pem),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        assert!(!e.is_retryable());

        let proof = ca.issue_verification(&code, &Default::default()).unwrap();
        c.verify_enrollment_group_certificate(
            "line-1",
            entry,
            &X509VerificationCertificate {
                certificate: iotc::cert::certificate_string(&proof.cert_pem),
            },
        )
        .await
        .unwrap();
        assert!(
            c.get_enrollment_group_certificate("line-1", entry)
                .await
                .unwrap()
                .verified
        );

        // secondary: self-attested, then removed
        let secondary = CertificateEntry::Secondary;
        let cert2 = SigningX509Certificate {
            verified: true,
            certificate: Some(iotc::cert::certificate_string(other_ca.cert_pem())),
            info: None,
            etag: None,
        };
        assert!(
            c.set_enrollment_group_certificate("line-1", secondary, &cert2)
                .await
                .unwrap()
                .verified
        );
        c.delete_enrollment_group_certificate("line-1", secondary)
            .await
            .unwrap();
        let e = c
            .get_enrollment_group_certificate("line-1", secondary)
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");

        c.delete_enrollment_group("keys").await.unwrap();
        assert_not_found(
            c.get_enrollment_group("keys").await.unwrap_err(),
            "EnrollmentGroups_Get",
        );
    });
}

#[test]
fn paging_follows_next_link_across_many_pages() {
    let emu = Emu::start();
    let c = emu.client();
    emu.block_on(async {
        let futures: Vec<_> = (0..130)
            .map(|i| {
                let c = c.clone();
                async move {
                    c.create_device(&format!("p-{i:03}"), &device(&format!("P {i:03}"), true))
                        .await
                }
            })
            .collect();
        for r in futures::future::join_all(futures).await {
            r.unwrap();
        }

        // GA: the emulator's default page is 100, so two pages
        let mut pager = c.list_devices(&ListOptions::default());
        let mut seen = Vec::new();
        while let Some(page) = pager.next_page().await {
            seen.extend(page.unwrap().value.into_iter().filter_map(|d| d.id));
        }
        assert_eq!(pager.pages_fetched(), 2);
        assert_eq!(seen.len(), 130);

        // preview maxpagesize 7: 19 pages, every device exactly once
        let mut pager = c.list_devices(&ListOptions::default().max_page_size(7));
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        while let Some(page) = pager.next_page().await {
            let page = page.unwrap();
            sizes.push(page.value.len());
            seen.extend(page.value.into_iter().filter_map(|d| d.id));
        }
        assert_eq!(pager.pages_fetched(), 19, "{sizes:?}");
        assert!(sizes[..18].iter().all(|n| *n == 7), "{sizes:?}");
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), 130);
        assert_eq!(unique.len(), 130);

        // the stream form reads the same items lazily
        use futures::TryStreamExt;
        let streamed: Vec<Device> = c
            .list_devices(&ListOptions::default().max_page_size(25))
            .into_stream()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(streamed.len(), 130);

        // API tokens: more than three pages as well (the az CLI reads only the first). Their
        // list takes no page size, so 300 tokens + the emulator's own make four pages of 100.
        use futures::StreamExt;
        let results: Vec<_> = futures::stream::iter(0..300)
            .map(|i| {
                let c = c.clone();
                async move {
                    let req = ApiToken {
                        id: None,
                        roles: role(roles::OPERATOR, None),
                        token: None,
                        expiry: None,
                    };
                    c.create_api_token(&format!("tok-{i:03}"), &req).await
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            r.unwrap();
        }
        let mut pager = c.list_api_tokens();
        let mut seen = Vec::new();
        while let Some(page) = pager.next_page().await {
            seen.extend(page.unwrap().value.into_iter().filter_map(|t| t.id));
        }
        assert_eq!(pager.pages_fetched(), 4, "{} tokens", seen.len());
        assert_eq!(seen.len(), 301);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 301, "every token exactly once");
    });
}

#[test]
fn wrong_credentials_and_untrusted_tls_fail_clearly() {
    let emu = Emu::start();
    emu.block_on(async {
        let bad = Client::new(
            &emu.api_url,
            Credential::api_token("SharedAccessSignature sr=x&sig=bad&skn=nobody&se=9999999999999"),
            Some(emu.options()),
        )
        .unwrap();
        let e = bad.get_device("x").await.unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
        assert!(e.request_id().is_some(), "{e}");
        assert_eq!(bad.stats().attempts, 1, "a 401 is not retried");

        // without the emulator's CA the TLS handshake fails, and is not retried
        let untrusted = Client::new(
            &emu.api_url,
            Credential::api_token(emu.admin_token.clone()),
            Some(ClientOptions {
                extra_ca_pem: None,
                ..emu.options()
            }),
        )
        .unwrap();
        let e = untrusted.get_device("x").await.unwrap_err();
        assert!(matches!(e, Error::Transport { .. }), "{e}");
        assert_eq!(untrusted.stats().attempts, 1, "{e}");
    });
}
