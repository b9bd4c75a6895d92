//! Security matrix, part 1: every built-in role against every endpoint family of the
//! emulator's IoT Central API, over real TLS, with the expected allow/deny written out as a
//! table (not computed from the emulator's own role code, so a wrong rule there fails here).
//!
//! Organizations: `north` (the org-scoped roles' organization) with child `north-a`, and its
//! sibling `south`. Application-wide roles: Administrator, Operator, Builder. Org-scoped
//! roles, assigned on `north`: Org Admin, Org Operator, Org Viewer. Each row names one
//! request and the outcome for the six roles in that order: `Y` = 2xx, `n` = 403 (and the
//! service's error body, checked by the shared helper). Paths may contain `{r}`, replaced by
//! the role's index so that each role writes its own resource.
//!
//! Microsoft Entra callers run the same matrix: service principals and members of AD groups,
//! each the IoT Central user (of type `servicePrincipal` or `adGroup`) of one of the roles
//! above, app-wide and org-scoped, with bearer tokens from the emulator's authority. Each
//! must get exactly the column of its role: how a caller signs in changes nothing of what it
//! may do.

use crate::common_emulator;
use crate::common_entra;

use common_emulator::Emu;
use iotc::central::models::roles;
use serde_json::{json, Value};

const ROLES: [(&str, &str, Option<&str>); 6] = [
    ("Administrator", roles::ADMINISTRATOR, None),
    ("Operator", roles::OPERATOR, None),
    ("Builder", roles::BUILDER, None),
    ("Org Admin@north", roles::ORG_ADMIN, Some("north")),
    ("Org Operator@north", roles::ORG_OPERATOR, Some("north")),
    ("Org Viewer@north", roles::ORG_VIEWER, Some("north")),
];

/// Entra principals: (label, user type, role, organization, the column of `ROLES` they get).
/// No Administrator: the rows without `{r}` that delete (`user-south`, `token-south`) are the
/// Administrator column's alone, and the API-token Administrator runs them last.
const ENTRA: [(&str, &str, &str, Option<&str>, usize); 4] = [
    ("SP Operator", "servicePrincipal", roles::OPERATOR, None, 1),
    (
        "SP Org Operator@north",
        "servicePrincipal",
        roles::ORG_OPERATOR,
        Some("north"),
        4,
    ),
    ("AD group Builder", "adGroup", roles::BUILDER, None, 2),
    (
        "AD group Org Admin@north",
        "adGroup",
        roles::ORG_ADMIN,
        Some("north"),
        3,
    ),
];

/// (method, path, body, expected for Admin, Operator, Builder, OrgAdmin, OrgOperator, OrgViewer)
fn matrix() -> Vec<(&'static str, &'static str, Option<Value>, &'static str)> {
    let viewer_on = |org: &str| json!([{"role": roles::ORG_VIEWER, "organization": org}]);
    let group = |org: &str| json!({"displayName": "g", "filter": "SELECT * FROM devices", "organizations": [org]});
    let sym = json!({"displayName": "eg", "type": "iot", "attestation": {"type": "symmetricKey"}});
    let template = json!({"@type": ["ModelDefinition", "DeviceModel"], "displayName": "t",
        "capabilityModel": {"@id": "dtmi:proof:model;1", "@type": "Interface", "contents": []}});
    vec![
        // roles
        ("GET", "/roles", None, "YYYYYY"),
        (
            "GET",
            "/roles/ca310b8d-2f4a-44e0-a36e-957c202cd8d4",
            None,
            "YYYYYY",
        ),
        // organizations
        ("GET", "/organizations", None, "YYYYYY"),
        ("GET", "/organizations/north", None, "YYYYYY"),
        ("GET", "/organizations/north-a", None, "YYYYYY"),
        ("GET", "/organizations/south", None, "YYYnnn"),
        (
            "PUT",
            "/organizations/north-new-{r}",
            Some(json!({"parent": "north"})),
            "YnnYnn",
        ),
        (
            "PUT",
            "/organizations/south-new-{r}",
            Some(json!({"parent": "south"})),
            "Ynnnnn",
        ),
        (
            "PUT",
            "/organizations/top-new-{r}",
            Some(json!({})),
            "Ynnnnn",
        ),
        (
            "PATCH",
            "/organizations/north-a",
            Some(json!({"displayName": "A"})),
            "YnnYnn",
        ),
        (
            "PATCH",
            "/organizations/south",
            Some(json!({"displayName": "S"})),
            "Ynnnnn",
        ),
        ("DELETE", "/organizations/del-north-{r}", None, "YnnYnn"),
        ("DELETE", "/organizations/del-south-{r}", None, "Ynnnnn"),
        // users
        ("GET", "/users", None, "YnnYnn"),
        ("GET", "/users/user-north", None, "YnnYnn"),
        ("GET", "/users/user-south", None, "Ynnnnn"),
        (
            "PUT",
            "/users/u-north-{r}",
            Some(
                json!({"type": "email", "email": "n{r}@example.com", "roles": viewer_on("north")}),
            ),
            "YnnYnn",
        ),
        (
            "PUT",
            "/users/u-south-{r}",
            Some(
                json!({"type": "email", "email": "s{r}@example.com", "roles": viewer_on("south")}),
            ),
            "Ynnnnn",
        ),
        (
            "PUT",
            "/users/u-app-{r}",
            Some(
                json!({"type": "email", "email": "a{r}@example.com", "roles": [{"role": roles::OPERATOR}]}),
            ),
            "Ynnnnn",
        ),
        ("DELETE", "/users/user-south", None, "Ynnnnn"),
        // API tokens
        ("GET", "/apiTokens", None, "YnnYnn"),
        ("GET", "/apiTokens/token-north", None, "YnnYnn"),
        ("GET", "/apiTokens/token-south", None, "Ynnnnn"),
        (
            "PUT",
            "/apiTokens/t-north-{r}",
            Some(json!({"roles": viewer_on("north-a")})),
            "YnnYnn",
        ),
        (
            "PUT",
            "/apiTokens/t-south-{r}",
            Some(json!({"roles": viewer_on("south")})),
            "Ynnnnn",
        ),
        (
            "PUT",
            "/apiTokens/t-app-{r}",
            Some(json!({"roles": [{"role": roles::ADMINISTRATOR}]})),
            "Ynnnnn",
        ),
        ("DELETE", "/apiTokens/token-south", None, "Ynnnnn"),
        // devices
        ("GET", "/devices", None, "YYYYYY"),
        ("GET", "/devices/dev-north", None, "YYYYYY"),
        ("GET", "/devices/dev-north-a", None, "YYYYYY"),
        ("GET", "/devices/dev-south", None, "YYYnnn"),
        ("GET", "/devices/dev-app", None, "YYYnnn"),
        (
            "PUT",
            "/devices/new-north-{r}",
            Some(json!({"organizations": ["north"]})),
            "YYYYYn",
        ),
        (
            "PUT",
            "/devices/new-south-{r}",
            Some(json!({"organizations": ["south"]})),
            "YYYnnn",
        ),
        (
            "PUT",
            "/devices/new-app-{r}",
            Some(json!({"displayName": "x"})),
            "YYYYYn",
        ),
        (
            "PATCH",
            "/devices/dev-north",
            Some(json!({"enabled": true})),
            "YYYYYn",
        ),
        (
            "PATCH",
            "/devices/dev-south",
            Some(json!({"enabled": true})),
            "YYYnnn",
        ),
        (
            "PATCH",
            "/devices/dev-north",
            Some(json!({"organizations": ["south"]})),
            "YYYnnn",
        ),
        ("GET", "/devices/dev-north/credentials", None, "YYYYYn"),
        ("GET", "/devices/dev-south/credentials", None, "YYYnnn"),
        ("GET", "/devices/dev-north/attestation", None, "YYYYYn"),
        ("GET", "/devices/dev-south/attestation", None, "YYYnnn"),
        ("DELETE", "/devices/del-north-{r}", None, "YYYYYn"),
        ("DELETE", "/devices/del-south-{r}", None, "YYYnnn"),
        // device groups
        ("GET", "/deviceGroups", None, "YYYYYY"),
        ("GET", "/deviceGroups/grp-north", None, "YYYYYY"),
        ("GET", "/deviceGroups/grp-south", None, "YYYnnn"),
        ("GET", "/deviceGroups/grp-north/devices", None, "YYYYYY"),
        ("GET", "/deviceGroups/grp-south/devices", None, "YYYnnn"),
        (
            "PUT",
            "/deviceGroups/g-north-{r}",
            Some(group("north")),
            "YYYYYn",
        ),
        (
            "PUT",
            "/deviceGroups/g-south-{r}",
            Some(group("south")),
            "YYYnnn",
        ),
        ("DELETE", "/deviceGroups/grp-del-south-{r}", None, "YYYnnn"),
        // device templates (application level)
        ("GET", "/deviceTemplates", None, "YYYYYY"),
        (
            "GET",
            "/deviceTemplates/dtmi:proof:shared;1",
            None,
            "YYYYYY",
        ),
        (
            "PUT",
            "/deviceTemplates/dtmi:proof:r{r};1",
            Some(template),
            "YnYnnn",
        ),
        // enrollment groups (application level)
        ("GET", "/enrollmentGroups", None, "YYYYYY"),
        ("GET", "/enrollmentGroups/eg-shared", None, "YYYYYY"),
        ("PUT", "/enrollmentGroups/eg-new-{r}", Some(sym), "YnYnnn"),
        (
            "PATCH",
            "/enrollmentGroups/eg-shared",
            Some(json!({"enabled": true})),
            "YnYnnn",
        ),
        ("DELETE", "/enrollmentGroups/eg-del-{r}", None, "YnYnnn"),
        // the emulator's own settings endpoint
        ("GET", "/emulator/settings", None, "Ynnnnn"),
        ("PUT", "/emulator/settings", Some(json!({})), "Ynnnnn"),
        ("GET", "/emulator/stats", None, "Ynnnnn"),
    ]
}

async fn must(e: &Emu, m: &str, path: &str, body: Value) {
    let (s, v) = e.call(m, path, Some(body)).await;
    assert!((200..300).contains(&s), "setup {m} {path}: {s} {v}");
}

/// The fixture every row runs against, made with the admin token.
async fn setup() -> (Emu, Vec<String>) {
    setup_for(ROLES.len()).await
}

/// [`setup`] with the resources `{r}` rows delete for `callers` callers.
async fn setup_for(callers: usize) -> (Emu, Vec<String>) {
    let e = Emu::start().await;
    must(&e, "PUT", "/organizations/north", json!({})).await;
    must(
        &e,
        "PUT",
        "/organizations/north-a",
        json!({"parent": "north"}),
    )
    .await;
    must(&e, "PUT", "/organizations/south", json!({})).await;
    for (id, org) in [
        ("dev-north", Some("north")),
        ("dev-north-a", Some("north-a")),
        ("dev-south", Some("south")),
        ("dev-app", None),
    ] {
        let body = match org {
            Some(o) => json!({"organizations": [o]}),
            None => json!({}),
        };
        must(&e, "PUT", &format!("/devices/{id}"), body).await;
    }
    for o in ["north", "south"] {
        must(&e, "PUT", &format!("/devices/dev-{o}/attestation"), json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": "cHJpbWFyeS1rZXktb2YtdGhlLWRldmljZS0wMTIzNDU=", "secondaryKey": "c2Vjb25kYXJ5LWtleS1vZi10aGUtZGV2aWNlLTAxMjM="}})).await;
        must(
            &e,
            "PUT",
            &format!("/deviceGroups/grp-{o}"),
            json!({"displayName": o, "filter": "SELECT * FROM devices", "organizations": [o]}),
        )
        .await;
        must(
            &e,
            "PUT",
            &format!("/users/user-{o}"),
            json!({"type": "email", "email": format!("{o}@example.com"),
            "roles": [{"role": roles::ORG_VIEWER, "organization": o}]}),
        )
        .await;
        e.token_with(
            &format!("token-{o}"),
            json!([{"role": roles::ORG_VIEWER, "organization": o}]),
        )
        .await;
    }
    must(&e, "PUT", "/deviceTemplates/dtmi:proof:shared;1", json!({"@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "shared", "capabilityModel": {"@id": "dtmi:proof:sharedmodel;1", "@type": "Interface", "contents": []}})).await;
    must(
        &e,
        "PUT",
        "/enrollmentGroups/eg-shared",
        json!({"displayName": "eg", "type": "iot", "attestation": {"type": "symmetricKey"}}),
    )
    .await;
    for r in 0..callers {
        must(
            &e,
            "PUT",
            &format!("/organizations/del-north-{r}"),
            json!({"parent": "north"}),
        )
        .await;
        must(
            &e,
            "PUT",
            &format!("/organizations/del-south-{r}"),
            json!({"parent": "south"}),
        )
        .await;
        must(
            &e,
            "PUT",
            &format!("/devices/del-north-{r}"),
            json!({"organizations": ["north"]}),
        )
        .await;
        must(
            &e,
            "PUT",
            &format!("/devices/del-south-{r}"),
            json!({"organizations": ["south"]}),
        )
        .await;
        must(&e, "PUT", &format!("/deviceGroups/grp-del-south-{r}"),
            json!({"displayName": "d", "filter": "SELECT * FROM devices", "organizations": ["south"]})).await;
        must(
            &e,
            "PUT",
            &format!("/enrollmentGroups/eg-del-{r}"),
            json!({"displayName": "eg", "type": "iot", "attestation": {"type": "symmetricKey"}}),
        )
        .await;
    }
    let mut tokens = Vec::new();
    for (i, (_, role, org)) in ROLES.iter().enumerate() {
        let assignment = match org {
            Some(o) => json!([{"role": role, "organization": o}]),
            None => json!([{"role": role}]),
        };
        tokens.push(e.token_with(&format!("matrix-{i}"), assignment).await);
    }
    (e, tokens)
}

async fn send(
    e: &Emu,
    token: Option<&str>,
    m: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    if path.starts_with("/emulator/") {
        let (s, _, v) = e
            .raw(
                token,
                m,
                &format!("{}{path}", e.url),
                body.map(|b| b.to_string()),
                None,
            )
            .await;
        (s, v)
    } else {
        let (s, _, v) = e.call_as(token, m, path, body).await;
        (s, v)
    }
}

/// Makes the Entra principals of [`ENTRA`]: an app registration each (a member of a new AD
/// group for the `adGroup` ones), its IoT Central user, and a bearer token from the authority.
async fn entra_callers(e: &Emu) -> Vec<String> {
    let ready = common_entra::ready(e.dir.path());
    let authority = ready["authorityHost"].as_str().unwrap();
    let tenant = ready["tenantId"].as_str().unwrap();
    let mut out = Vec::new();
    for (i, (_, kind, role, org, _)) in ENTRA.iter().enumerate() {
        let group = format!("6f1d3c2a-0000-4000-8000-{i:012}");
        let body = if *kind == "adGroup" {
            json!({"groups": [group]})
        } else {
            json!({})
        };
        let app =
            common_entra::register(&e.http, &e.url, &e.token, &format!("rbac-{i}"), body).await;
        let object_id = if *kind == "adGroup" {
            &group
        } else {
            &app.object_id
        };
        let assignment = match org {
            Some(o) => json!([{"role": role, "organization": o}]),
            None => json!([{"role": role}]),
        };
        common_entra::add_user(
            &e.http,
            &e.url,
            &e.token,
            &format!("entra-{i}"),
            common_entra::user(kind, tenant, object_id, assignment),
        )
        .await;
        let (s, v) = common_entra::token_with_secret(
            &e.http,
            authority,
            &app,
            "https://apps.azureiotcentral.com/.default",
        )
        .await;
        assert_eq!(s, 200, "{v}");
        out.push(format!("Bearer {}", v["access_token"].as_str().unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_endpoint_family() {
    let (e, mut tokens) = setup_for(ROLES.len() + ENTRA.len()).await;
    tokens.extend(entra_callers(&e).await);
    let label = |r: usize| {
        ROLES
            .get(r)
            .map(|x| x.0)
            .unwrap_or_else(|| ENTRA[r - ROLES.len()].0)
    };
    let column = |r: usize| {
        ROLES
            .get(r)
            .map(|_| r)
            .unwrap_or_else(|| ENTRA[r - ROLES.len()].4)
    };
    let rows = matrix();
    let mut wrong = Vec::new();
    // Roles with fewer rights first, so a denied write never hides behind an earlier
    // allowed write of the same resource (each caller writes its own `{r}` resources anyway),
    // and an Entra caller right beside the API token of its role.
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(column(r)));
    for r in order {
        for (m, path, body, expected) in &rows {
            let want_allow = expected.as_bytes()[column(r)] == b'Y';
            let path = path.replace("{r}", &r.to_string());
            let body = body.as_ref().map(|b| {
                serde_json::from_str(&b.to_string().replace("{r}", &r.to_string())).unwrap()
            });
            let (s, v) = send(&e, Some(&tokens[r]), m, &path, body).await;
            let ok = if want_allow {
                (200..300).contains(&s)
            } else {
                s == 403
            };
            if !ok {
                wrong.push(format!(
                    "{:<24} {m} {path}: expected {}, got {s} {}",
                    label(r),
                    if want_allow { "2xx" } else { "403" },
                    v["error"]["message"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells of the matrix are wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_scoped_lists_show_only_the_subtree() {
    let (e, tokens) = setup().await;
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    for r in 3..6 {
        let (s, v) = send(&e, Some(&tokens[r]), "GET", "/devices", None).await;
        assert_eq!(s, 200);
        let got = ids(&v);
        assert!(
            got.iter()
                .all(|d| d == "dev-north" || d == "dev-north-a" || d.starts_with("del-north-")),
            "{}: {got:?}",
            ROLES[r].0
        );
        assert!(
            got.contains(&"dev-north-a".to_owned()),
            "the child organization's devices are in reach"
        );
        let (_, v) = send(&e, Some(&tokens[r]), "GET", "/deviceGroups", None).await;
        assert_eq!(ids(&v), vec!["grp-north"], "{}", ROLES[r].0);
        let (_, v) = send(&e, Some(&tokens[r]), "GET", "/organizations", None).await;
        assert!(
            ids(&v)
                .iter()
                .all(|o| o.starts_with("north") || o.starts_with("del-north")),
            "{v}"
        );
    }
    let (_, v) = send(&e, Some(&tokens[3]), "GET", "/users", None).await;
    assert_eq!(ids(&v), vec!["user-north"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_forged_expired_and_revoked_tokens_get_401_everywhere() {
    let (e, tokens) = setup().await;
    let good = tokens[0].clone();
    // Same token id and application, another signature.
    let sig_at = good.find("sig=").unwrap() + 4;
    let mut forged = good.clone();
    let c = if &forged[sig_at..sig_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    forged.replace_range(sig_at..sig_at + 1, c);
    // A token that expires in 2 s: it works now, and is refused everywhere once expired.
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let (s, v) = e
        .call(
            "PUT",
            "/apiTokens/short",
            Some(json!({"roles": [{"role": roles::ADMINISTRATOR}],
        "expiry": expires.format(&time::format_description::well_known::Rfc3339).unwrap()})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let expired = v["token"].as_str().unwrap().to_owned();
    let (s, v) = send(&e, Some(&expired), "GET", "/devices", None).await;
    assert_eq!(s, 200, "before its expiry the token works: {v}");
    // A later expiry than the one issued is not the same token.
    let se = expired.split("se=").nth(1).unwrap();
    let se_ms: u64 = se.split('&').next().unwrap().parse().unwrap();
    let later = expired.replace(&format!("se={se_ms}"), &format!("se={}", se_ms + 3_600_000));
    assert_ne!(later, expired);
    let revoked = e
        .token_with("revoked", json!([{"role": roles::ADMINISTRATOR}]))
        .await;
    let (s, _) = e.call("DELETE", "/apiTokens/revoked", None).await;
    assert_eq!(s, 204);
    let probes = [
        "/roles",
        "/devices",
        "/organizations",
        "/users",
        "/apiTokens",
        "/deviceGroups",
        "/deviceTemplates",
        "/enrollmentGroups",
        "/devices/dev-north/credentials",
    ];
    let wait = (expires - time::OffsetDateTime::now_utc()).whole_milliseconds() + 500;
    tokio::time::sleep(std::time::Duration::from_millis(wait.max(0) as u64)).await;
    for tok in [
        None,
        Some(forged.as_str()),
        Some(revoked.as_str()),
        Some(expired.as_str()),
        Some(later.as_str()),
        Some("Bearer abc"),
        Some("SharedAccessSignature sr=x&sig=y&skn=matrix-0&se=1"),
    ] {
        for p in probes {
            let (s, v) = send(&e, tok, "GET", p, None).await;
            assert_eq!(s, 401, "{tok:?} GET {p}: {v}");
        }
        for p in ["/emulator/settings", "/emulator/stats"] {
            let (s, _) = send(&e, tok, "GET", p, None).await;
            assert_eq!(s, 401, "{tok:?} GET {p}");
        }
    }
}
