//! Organizations, roles, users and API tokens of the emulator, and authorization like the
//! service: org-scoped tokens see and change only their organization and its descendants,
//! viewers cannot write, revoked and expired tokens get 401, forbidden calls 403, and lists
//! never leak entries of other organizations.

use crate::common_emulator;

use common_emulator::Emu;
use iotc::central::models::roles;
use serde_json::{json, Value};

async fn org(e: &Emu, id: &str, parent: Option<&str>) -> (u16, Value) {
    let mut body = json!({"displayName": id.to_uppercase()});
    if let Some(p) = parent {
        body["parent"] = json!(p);
    }
    e.call("PUT", &format!("/organizations/{id}"), Some(body))
        .await
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("list in {v}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn organization_hierarchy_rules() {
    let e = Emu::start().await;
    let (s, o) = org(&e, "usa", None).await;
    assert_eq!(s, 200, "{o}");
    assert_eq!(o, json!({"id":"usa","displayName":"USA"}));
    assert_eq!(org(&e, "seattle", Some("usa")).await.0, 200);
    assert_eq!(org(&e, "redmond", Some("seattle")).await.0, 200);
    // Parent must exist; no self-parent; no cycle; ids follow the spec's pattern.
    let (s, v) = org(&e, "x1", Some("nowhere")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidParent"))
    );
    assert_eq!(org(&e, "usa", Some("usa")).await.0, 400);
    let (s, v) = e
        .call(
            "PATCH",
            "/organizations/usa",
            Some(json!({"parent": "redmond"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("cycle"));
    for bad in ["Upper", "-lead", "trail-", "a", "under_score"] {
        let (s, _) = e
            .call("PUT", &format!("/organizations/{bad}"), Some(json!({})))
            .await;
        assert_eq!(s, 400, "{bad}");
    }
    // Deleting an organization in use is refused, naming what uses it.
    let (s, v) = e.call("DELETE", "/organizations/seattle", None).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("child organization"));
    let (s, _) = e
        .call(
            "PUT",
            "/devices/dev-in-redmond",
            Some(json!({"organizations": ["redmond"]})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = e.call("DELETE", "/organizations/redmond", None).await;
    assert_eq!(s, 409);
    assert!(v["error"]["message"].as_str().unwrap().contains("device"));
    e.call("DELETE", "/devices/dev-in-redmond", None).await;
    let (s, _) = e.call("DELETE", "/organizations/redmond", None).await;
    assert_eq!(s, 204);
    let (s, l) = e.call("GET", "/organizations", None).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&l), vec!["seattle", "usa"]);
}

#[tokio::test]
async fn roles_are_the_built_in_ones() {
    let e = Emu::start().await;
    let (_, l) = e.call("GET", "/roles", None).await;
    let got = ids(&l);
    for r in [
        roles::ADMINISTRATOR,
        roles::OPERATOR,
        roles::BUILDER,
        roles::ORG_ADMIN,
        roles::ORG_OPERATOR,
        roles::ORG_VIEWER,
    ] {
        assert!(got.contains(&r.to_owned()), "{r}");
    }
    let (s, r) = e
        .call("GET", &format!("/roles/{}", roles::ADMINISTRATOR), None)
        .await;
    assert_eq!((s, r["displayName"].as_str()), (200, Some("Administrator")));
    let (s, _) = e.call("GET", "/roles/not-a-role", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn users_of_each_kind_with_unique_ids_and_emails() {
    let e = Emu::start().await;
    org(&e, "seattle", None).await;
    let admin = json!([{"role": roles::ADMINISTRATOR}]);
    let (s, u) = e
        .call(
            "PUT",
            "/users/u1",
            Some(json!({"type":"email","email":"a@contoso.com","roles": admin})),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["id"], "u1");
    let (s, u) = e
        .call(
            "PUT",
            "/users/sp1",
            Some(json!({"type":"servicePrincipal","tenantId":"31ba9b8c-2ad0-4be8-ad01-b6bb3dbe7d0c","objectId":"7ee6d4e7-ef32-4e4f-8d26-ac1b2a5b4d3e","roles":[{"role": roles::ORG_OPERATOR, "organization":"seattle"}]})),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    let (s, _) = e
        .call(
            "PUT",
            "/users/g1",
            Some(json!({"type":"adGroup","tenantId":"31ba9b8c-2ad0-4be8-ad01-b6bb3dbe7d0c","objectId":"0ee6d4e7-ef32-4e4f-8d26-ac1b2a5b4d3e","roles": admin})),
        )
        .await;
    assert_eq!(s, 200);
    // The same email (any case) under another id is a conflict; re-PUT of the same id is not.
    let (s, v) = e
        .call(
            "PUT",
            "/users/u2",
            Some(json!({"type":"email","email":"A@Contoso.com","roles": admin})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, _) = e
        .call("PUT", "/users/u1", Some(json!({"type":"email","email":"a@contoso.com","roles": [{"role": roles::OPERATOR}]})))
        .await;
    assert_eq!(s, 200);
    for (id, body) in [
        (
            "u3",
            json!({"type":"email","email":"not-an-email","roles": admin}),
        ),
        (
            "u3",
            json!({"type":"email","email":"b@contoso.com","roles": []}),
        ),
        ("u3", json!({"type":"email","email":"b@contoso.com"})),
        (
            "u3",
            json!({"type":"email","email":"b@contoso.com","roles":[{"role":"made-up"}]}),
        ),
        (
            "u3",
            json!({"type":"email","email":"b@contoso.com","roles":[{"role": roles::ORG_ADMIN, "organization":"nowhere"}]}),
        ),
        ("u3", json!({"type":"robot","roles": admin})),
        (
            "u3",
            json!({"type":"servicePrincipal","tenantId":"x","objectId":"y","roles": admin}),
        ),
        (
            "bad id!",
            json!({"type":"email","email":"c@contoso.com","roles": admin}),
        ),
    ] {
        let (s, v) = e
            .call(
                "PUT",
                &format!("/users/{}", id.replace(' ', "%20")),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}: {v}");
    }
    let (s, u) = e
        .call(
            "PATCH",
            "/users/u1",
            Some(json!({"email":"new@contoso.com"})),
        )
        .await;
    assert_eq!((s, u["email"].as_str()), (200, Some("new@contoso.com")));
    let (_, l) = e.call("GET", "/users", None).await;
    assert_eq!(ids(&l), vec!["g1", "sp1", "u1"]);
    let (s, _) = e.call("DELETE", "/users/u1", None).await;
    assert_eq!(s, 204);
    let (s, _) = e.call("GET", "/users/u1", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn api_tokens_are_shown_once_and_revoked_at_once() {
    let e = Emu::start().await;
    let (s, t) = e
        .call(
            "PUT",
            "/apiTokens/ops",
            Some(json!({"roles":[{"role": roles::OPERATOR}]})),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let token = t["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("SharedAccessSignature sr="));
    assert!(token.contains("&skn=ops&se="));
    let expiry = time::OffsetDateTime::parse(
        t["expiry"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let se: i128 = token.rsplit("se=").next().unwrap().parse().unwrap();
    assert_eq!(se, expiry.unix_timestamp_nanos() / 1_000_000);
    // The token works...
    let (s, _, _) = e.call_as(Some(&token), "GET", "/devices", None).await;
    assert_eq!(s, 200);
    // ...is never shown again...
    let (_, g) = e.call("GET", "/apiTokens/ops", None).await;
    assert!(g.get("token").is_none(), "{g}");
    assert_eq!(g["expiry"], t["expiry"]);
    let (_, l) = e.call("GET", "/apiTokens", None).await;
    assert!(l["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x.get("token").is_none()));
    assert_eq!(ids(&l), vec!["emulator-admin", "ops"]);
    // ...cannot be recreated or changed...
    let (s, _) = e
        .call(
            "PUT",
            "/apiTokens/ops",
            Some(json!({"roles":[{"role": roles::ADMINISTRATOR}]})),
        )
        .await;
    assert_eq!(s, 409);
    // ...and stops working the moment it is deleted.
    let (s, _) = e.call("DELETE", "/apiTokens/ops", None).await;
    assert_eq!(s, 204);
    let (s, _, _) = e.call_as(Some(&token), "GET", "/devices", None).await;
    assert_eq!(s, 401);
    // Expiry rules.
    let past = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for body in [
        json!({"roles":[{"role": roles::OPERATOR}], "expiry": past}),
        json!({"roles":[{"role": roles::OPERATOR}], "expiry": "tomorrow"}),
        json!({"roles":[{"role": roles::OPERATOR}], "expiry": "2099-01-01T00:00:00Z"}),
        json!({"roles":[]}),
        json!({"roles":[{"role": roles::OPERATOR}], "token": "SharedAccessSignature x"}),
    ] {
        let (s, v) = e.call("PUT", "/apiTokens/t2", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
    }
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (s, t) = e
        .call(
            "PUT",
            "/apiTokens/short",
            Some(json!({"roles":[{"role": roles::OPERATOR}], "expiry": soon})),
        )
        .await;
    assert_eq!(s, 200);
    let short = t["token"].as_str().unwrap().to_owned();
    let (s, _, _) = e.call_as(Some(&short), "GET", "/devices", None).await;
    assert_eq!(s, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (s, _, _) = e.call_as(Some(&short), "GET", "/devices", None).await;
    assert_eq!(s, 401, "an expired token is refused");
}

struct Orgs {
    e: Emu,
    seattle_admin: String,
    seattle_viewer: String,
    operator: String,
}

/// usa > seattle > redmond, and portland (not under seattle); a device and a device group
/// in each; tokens scoped to seattle.
async fn orgs_setup() -> Orgs {
    let e = Emu::start().await;
    org(&e, "usa", None).await;
    org(&e, "seattle", Some("usa")).await;
    org(&e, "redmond", Some("seattle")).await;
    org(&e, "portland", Some("usa")).await;
    for o in ["usa", "seattle", "redmond", "portland"] {
        let (s, _) = e
            .call(
                "PUT",
                &format!("/devices/dev-{o}"),
                Some(json!({"organizations": [o]})),
            )
            .await;
        assert_eq!(s, 200);
        let (s, v) = e
            .call(
                "PUT",
                &format!("/deviceGroups/grp-{o}"),
                Some(json!({"displayName": o, "filter": "SELECT * FROM devices", "organizations": [o]})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    e.call("PUT", "/devices/dev-app", Some(json!({}))).await;
    let seattle_admin = e
        .token_with(
            "seattle-admin",
            json!([{"role": roles::ORG_ADMIN, "organization": "seattle"}]),
        )
        .await;
    let seattle_viewer = e
        .token_with(
            "seattle-viewer",
            json!([{"role": roles::ORG_VIEWER, "organization": "seattle"}]),
        )
        .await;
    let operator = e
        .token_with("operator", json!([{"role": roles::OPERATOR}]))
        .await;
    Orgs {
        e,
        seattle_admin,
        seattle_viewer,
        operator,
    }
}

#[tokio::test]
async fn org_scoped_tokens_see_only_their_subtree() {
    let Orgs {
        e,
        seattle_admin,
        seattle_viewer,
        ..
    } = orgs_setup().await;
    for tok in [&seattle_admin, &seattle_viewer] {
        let (s, _, l) = e.call_as(Some(tok), "GET", "/devices", None).await;
        assert_eq!(s, 200);
        assert_eq!(ids(&l), vec!["dev-redmond", "dev-seattle"]);
        let (_, _, l) = e.call_as(Some(tok), "GET", "/deviceGroups", None).await;
        assert_eq!(ids(&l), vec!["grp-redmond", "grp-seattle"]);
        let (_, _, l) = e.call_as(Some(tok), "GET", "/organizations", None).await;
        assert_eq!(ids(&l), vec!["redmond", "seattle"]);
        for path in [
            "/devices/dev-portland",
            "/devices/dev-usa",
            "/devices/dev-app",
            "/deviceGroups/grp-usa",
            "/organizations/portland",
        ] {
            let (s, _, v) = e.call_as(Some(tok), "GET", path, None).await;
            assert_eq!(s, 403, "{path}: {v}");
        }
        let (s, _, _) = e
            .call_as(Some(tok), "GET", "/devices/dev-redmond", None)
            .await;
        assert_eq!(s, 200);
    }
    // A group's devices never include devices outside the caller's reach.
    let (_, _, l) = e
        .call_as(
            Some(&seattle_admin),
            "GET",
            "/deviceGroups/grp-seattle/devices",
            None,
        )
        .await;
    assert_eq!(ids(&l), vec!["dev-seattle"]);
    let (_, l) = e.call("GET", "/devices", None).await;
    assert_eq!(ids(&l).len(), 5);
    // Users and tokens of other organizations are not listed.
    let (_, _, l) = e
        .call_as(Some(&seattle_admin), "GET", "/apiTokens", None)
        .await;
    assert_eq!(ids(&l), vec!["seattle-admin", "seattle-viewer"]);
}

#[tokio::test]
async fn org_scoped_writes_stay_inside_the_subtree() {
    let Orgs {
        e, seattle_admin, ..
    } = orgs_setup().await;
    let t = Some(seattle_admin.as_str());
    // New device without organizations lands in the caller's organization.
    let (s, _, d) = e
        .call_as(t, "PUT", "/devices/new-dev", Some(json!({})))
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["organizations"], json!(["seattle"]));
    let (s, _, _) = e
        .call_as(
            t,
            "PUT",
            "/devices/new-dev2",
            Some(json!({"organizations": ["redmond"]})),
        )
        .await;
    assert_eq!(s, 200);
    for (m, path, body) in [
        (
            "PUT",
            "/devices/new-dev3",
            Some(json!({"organizations": ["portland"]})),
        ),
        (
            "PATCH",
            "/devices/dev-seattle",
            Some(json!({"organizations": ["portland"]})),
        ),
        (
            "PATCH",
            "/devices/dev-portland",
            Some(json!({"enabled": false})),
        ),
        ("DELETE", "/devices/dev-usa", None),
        ("PUT", "/devices/dev-app", Some(json!({}))),
        ("PUT", "/organizations/top", Some(json!({}))),
        (
            "PUT",
            "/organizations/sub",
            Some(json!({"parent": "portland"})),
        ),
        ("DELETE", "/organizations/portland", None),
        (
            "PUT",
            "/apiTokens/escalate",
            Some(json!({"roles": [{"role": roles::ADMINISTRATOR}]})),
        ),
        (
            "PUT",
            "/apiTokens/elsewhere",
            Some(json!({"roles": [{"role": roles::ORG_ADMIN, "organization": "portland"}]})),
        ),
        (
            "PUT",
            "/users/x",
            Some(
                json!({"type":"email","email":"x@y.com","roles": [{"role": roles::ADMINISTRATOR}]}),
            ),
        ),
        (
            "PUT",
            "/enrollmentGroups/g",
            Some(json!({"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}})),
        ),
        (
            "PUT",
            "/deviceTemplates/dtmi:a:b;1",
            Some(json!({"@type":["ModelDefinition","DeviceModel"],"capabilityModel":{}})),
        ),
        ("GET", "/emulator/settings", None),
    ] {
        let (s, _, v) = if path.starts_with("/emulator") {
            e.raw(t, m, &format!("{}{path}", e.url), None, None).await
        } else {
            e.call_as(t, m, path, body).await
        };
        assert_eq!(s, 403, "{m} {path}: {v}");
    }
    // Inside the subtree an org admin may manage organizations, users and tokens.
    let (s, _, v) = e
        .call_as(
            t,
            "PUT",
            "/organizations/kirkland",
            Some(json!({"parent": "seattle"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = e
        .call_as(t, "PUT", "/users/local", Some(json!({"type":"email","email":"l@y.com","roles": [{"role": roles::ORG_OPERATOR, "organization": "kirkland"}]})))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = e
        .call_as(
            t,
            "PUT",
            "/apiTokens/local",
            Some(json!({"roles": [{"role": roles::ORG_VIEWER, "organization": "redmond"}]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn viewers_and_operators_cannot_do_what_their_role_forbids() {
    let Orgs {
        e,
        seattle_viewer,
        operator,
        ..
    } = orgs_setup().await;
    let v = Some(seattle_viewer.as_str());
    for (m, path, body) in [
        ("PUT", "/devices/dev-seattle", Some(json!({}))),
        (
            "PATCH",
            "/devices/dev-seattle",
            Some(json!({"enabled": false})),
        ),
        ("DELETE", "/devices/dev-seattle", None),
        ("GET", "/devices/dev-seattle/credentials", None),
        (
            "PUT",
            "/deviceGroups/grp-seattle",
            Some(json!({"displayName":"x","filter":"SELECT * FROM devices"})),
        ),
        ("GET", "/users", None),
        ("GET", "/apiTokens", None),
    ] {
        let (s, _, b) = e.call_as(v, m, path, body).await;
        assert_eq!(s, 403, "viewer {m} {path}: {b}");
    }
    let o = Some(operator.as_str());
    let (s, _, _) = e
        .call_as(
            o,
            "PATCH",
            "/devices/dev-portland",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200);
    for (m, path, body) in [
        ("GET", "/users", None),
        (
            "PUT",
            "/apiTokens/x",
            Some(json!({"roles": [{"role": roles::OPERATOR}]})),
        ),
        ("PUT", "/organizations/x1", Some(json!({}))),
        (
            "PUT",
            "/enrollmentGroups/g",
            Some(json!({"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}})),
        ),
    ] {
        let (s, _, b) = e.call_as(o, m, path, body).await;
        assert_eq!(s, 403, "operator {m} {path}: {b}");
    }
    let (s, _, _) = e.call_as(o, "GET", "/enrollmentGroups", None).await;
    assert_eq!(s, 200);
}
