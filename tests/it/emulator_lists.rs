//! Lists (paging with nextLink, preview maxpagesize/filter/orderby), device groups with
//! their query, device credentials and individual attestation, device templates.

use crate::common_emulator;

use base64::Engine;
use common_emulator::{Emu, GA, PREVIEW};
use iotc::cert::{certificate_string, Authority, CaOptions, LeafOptions};
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<String> {
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("list in {v}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn many_devices(e: &Emu, n: usize) {
    for i in 0..n {
        let (s, _) = e
            .call(
                "PUT",
                &format!("/devices/dev-{i:03}"),
                Some(json!({"displayName": format!("Device {i:03}"), "template": "dtmi:t:a;1"})),
            )
            .await;
        assert_eq!(s, 200);
    }
}

/// Follows nextLink to the end; returns every id and the number of pages.
async fn walk(e: &Emu, first: &str, version: &str) -> (Vec<String>, usize) {
    let (s, _, mut page) = e.call_v(Some(&e.token), "GET", first, version, None).await;
    assert_eq!(s, 200, "{page}");
    let mut all = ids(&page);
    let mut pages = 1;
    while let Some(next) = page["nextLink"].as_str().map(str::to_owned) {
        assert!(next.starts_with(&e.url), "{next}");
        let (s, _, p) = e.raw(Some(&e.token), "GET", &next, None, None).await;
        assert_eq!(s, 200, "{p}");
        all.extend(ids(&p));
        page = p;
        pages += 1;
        assert!(pages < 100);
    }
    (all, pages)
}

#[tokio::test]
async fn paging_ga_and_preview() {
    let e = Emu::start().await;
    many_devices(&e, 105).await;
    let (all, pages) = walk(&e, "/devices", GA).await;
    assert_eq!((all.len(), pages), (105, 2));
    let expected: Vec<String> = (0..105).map(|i| format!("dev-{i:03}")).collect();
    assert_eq!(all, expected, "creation order, no gaps or duplicates");
    let (all, pages) = walk(&e, "/devices", PREVIEW).await;
    assert_eq!(
        (all.len(), pages),
        (105, 5),
        "preview default page size is 25"
    );
    let (all, pages) = walk(
        &e,
        "/devices?maxpagesize=10&filter=contains(displayName,'0')",
        PREVIEW,
    )
    .await;
    let want = expected.iter().filter(|i| i[4..].contains('0')).count();
    assert_eq!(all.len(), want);
    assert_eq!(pages, want.div_ceil(10));
    for bad in ["0", "101", "-1", "ten"] {
        let (s, _, v) = e
            .call_v(
                Some(&e.token),
                "GET",
                &format!("/devices?maxpagesize={bad}"),
                PREVIEW,
                None,
            )
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidMaxPageSize")),
            "{bad}"
        );
    }
    // Preview options on the GA version and garbage skip tokens are refused, not ignored.
    for q in [
        "/devices?maxpagesize=5",
        "/devices?filter=enabled%20eq%20true",
        "/devices?$top=1",
        "/devices?$skiptoken=zzz",
    ] {
        let (s, v) = e.call("GET", q, None).await;
        assert_eq!(s, 400, "{q}: {v}");
    }
}

#[tokio::test]
async fn preview_filter_and_orderby() {
    let e = Emu::start().await;
    e.call("PUT", "/organizations/redmond", Some(json!({})))
        .await;
    for (id, name, enabled, sim, org) in [
        ("a1", "Thermostat kitchen", true, false, None),
        ("a2", "thermostat hall", false, true, Some("redmond")),
        ("a3", "Lamp", true, true, Some("redmond")),
        ("a4", "Boiler", true, false, None),
    ] {
        let mut body = json!({"displayName": name, "enabled": enabled, "simulated": sim, "template": format!("dtmi:t:{id};1")});
        if let Some(o) = org {
            body["organizations"] = json!([o]);
        }
        let (s, v) = e.call("PUT", &format!("/devices/{id}"), Some(body)).await;
        assert_eq!(s, 200, "{v}");
    }
    let cases: &[(&str, &[&str])] = &[
        ("enabled eq true", &["a1", "a3", "a4"]),
        ("enabled eq false or simulated eq true", &["a2", "a3"]),
        ("contains(displayName, 'THERMO')", &["a1", "a2"]),
        ("scopes eq 'redmond' and enabled ne false", &["a3"]),
        ("id gt 'a2'", &["a3", "a4"]),
        ("id le 'a2'", &["a1", "a2"]),
        ("template eq 'dtmi:t:a4;1'", &["a4"]),
        ("provisioned eq true", &[]),
        ("(id eq 'a1' or id eq 'a4') and displayName ge 'C'", &["a1"]),
    ];
    for (f, want) in cases {
        let q = format!("/devices?filter={}", urlencode(f));
        let (s, _, v) = e.call_v(Some(&e.token), "GET", &q, PREVIEW, None).await;
        assert_eq!(s, 200, "{f}: {v}");
        assert_eq!(ids(&v), *want, "{f}");
    }
    for bad in [
        "enabled eq 'yes'",
        "color eq 'red'",
        "id eq",
        "contains(id,'a')",
        "((",
        "id eq 'a' or",
    ] {
        let q = format!("/devices?filter={}", urlencode(bad));
        let (s, _, v) = e.call_v(Some(&e.token), "GET", &q, PREVIEW, None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidFilter")),
            "{bad}"
        );
    }
    let (_, _, v) = e
        .call_v(
            Some(&e.token),
            "GET",
            "/devices?orderby=displayName",
            PREVIEW,
            None,
        )
        .await;
    assert_eq!(ids(&v), vec!["a4", "a3", "a2", "a1"]);
    let (_, _, v) = e
        .call_v(
            Some(&e.token),
            "GET",
            "/devices?orderby=displayName%20desc&maxpagesize=2",
            PREVIEW,
            None,
        )
        .await;
    assert_eq!(ids(&v), vec!["a1", "a2"]);
    let next = v["nextLink"].as_str().unwrap();
    assert!(
        next.contains("orderby=displayName+desc") && next.contains("maxpagesize=2"),
        "{next}"
    );
    let (_, _, v2) = e.raw(Some(&e.token), "GET", next, None, None).await;
    assert_eq!(ids(&v2), vec!["a3", "a4"]);
    let (s, _, _) = e
        .call_v(Some(&e.token), "GET", "/devices?orderby=id", PREVIEW, None)
        .await;
    assert_eq!(s, 400);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn device_groups_parse_and_evaluate_their_query() {
    let e = Emu::start().await;
    e.call(
        "PUT",
        "/devices/p1",
        Some(json!({"template": "dtmi:modelDefinition:dtdlv2;1"})),
    )
    .await;
    e.call(
        "PUT",
        "/devices/p2",
        Some(json!({"template": "dtmi:modelDefinition:dtdlv2;1", "simulated": true})),
    )
    .await;
    e.call(
        "PUT",
        "/devices/p3",
        Some(json!({"template": "dtmi:other:x;1"})),
    )
    .await;
    // Provision p1 the way DPS does.
    iotc::emulator::app::provision_device(e.emu.as_ref().unwrap().store(), "p1", None, false)
        .unwrap();
    let seed_query = "SELECT * FROM devices WHERE $template = \"dtmi:modelDefinition:dtdlv2;1\" AND $provisioned = true";
    let (s, g) = e
        .call(
            "PUT",
            "/deviceGroups/provisioned",
            Some(json!({"displayName": "Provisioned", "filter": seed_query, "description": "d"})),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["filter"], seed_query);
    let (_, l) = e
        .call("GET", "/deviceGroups/provisioned/devices", None)
        .await;
    assert_eq!(ids(&l), vec!["p1"]);
    let (s, g2) = e
        .call("PATCH", "/deviceGroups/provisioned", Some(json!({"filter": "SELECT * FROM devices WHERE $simulated = true OR $template != \"dtmi:modelDefinition:dtdlv2;1\""})))
        .await;
    assert_eq!(s, 200, "{g2}");
    assert_eq!(g2["displayName"], "Provisioned");
    let (_, l) = e
        .call("GET", "/deviceGroups/provisioned/devices", None)
        .await;
    assert_eq!(ids(&l), vec!["p2", "p3"]);
    // Stale etag.
    let (s, _) = e
        .call(
            "PATCH",
            "/deviceGroups/provisioned",
            Some(json!({"displayName": "x", "etag": g["etag"]})),
        )
        .await;
    assert_eq!(s, 412);
    for bad in [
        "SELECT * FROM devices WHERE",
        "SELECT * FROM devices WHERE $provisioned = \"yes\"",
        "SELECT * FROM devices WHERE $temperature > 3",
        "DROP TABLE devices",
        "",
    ] {
        let (s, v) = e
            .call(
                "PUT",
                "/deviceGroups/bad",
                Some(json!({"displayName": "b", "filter": bad})),
            )
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidFilter")),
            "{bad}: {v}"
        );
    }
    let (s, _) = e
        .call(
            "PUT",
            "/deviceGroups/bad",
            Some(json!({"displayName": "b"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = e
        .call(
            "PUT",
            "/deviceGroups/bad.id",
            Some(json!({"displayName": "b", "filter": "SELECT * FROM devices"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = e.call("DELETE", "/deviceGroups/provisioned", None).await;
    assert_eq!(s, 204);
    let (s, _) = e
        .call("GET", "/deviceGroups/provisioned/devices", None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn device_status_follows_what_happens() {
    let e = Emu::start().await;
    let (_, d) = e
        .call("PUT", "/devices/s1", Some(json!({"enabled": false})))
        .await;
    assert_eq!(
        (d["provisioned"].clone(), d["enabled"].clone()),
        (json!(false), json!(false)),
        "waiting for approval"
    );
    let (_, d) = e
        .call("PATCH", "/devices/s1", Some(json!({"enabled": true})))
        .await;
    assert_eq!(
        (d["provisioned"].clone(), d["enabled"].clone()),
        (json!(false), json!(true)),
        "registered"
    );
    iotc::emulator::app::provision_device(
        e.emu.as_ref().unwrap().store(),
        "s1",
        Some("dtmi:x:y;1"),
        false,
    )
    .unwrap();
    let (_, d) = e.call("GET", "/devices/s1", None).await;
    assert_eq!(
        (d["provisioned"].clone(), d["enabled"].clone()),
        (json!(true), json!(true)),
        "provisioned"
    );
    assert_eq!(d["template"], "dtmi:x:y;1");
    // provisioned is read-only for API callers.
    let (_, d) = e
        .call(
            "PATCH",
            "/devices/s1",
            Some(json!({"enabled": false, "provisioned": false})),
        )
        .await;
    assert_eq!(
        (d["provisioned"].clone(), d["enabled"].clone()),
        (json!(true), json!(false)),
        "blocked"
    );
}

#[tokio::test]
async fn credentials_derive_from_the_application_sas_group() {
    let e = Emu::start().await;
    e.call("PUT", "/devices/dev-01", Some(json!({}))).await;
    let (s, c) = e.call("GET", "/devices/dev-01/credentials", None).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        c["idScope"].as_str(),
        Some(e.emu.as_ref().unwrap().info().id_scope.as_str())
    );
    let key = c["symmetricKey"]["primaryKey"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap()
            .len(),
        32
    );
    let facts = iotc::emulator::app::init(e.emu.as_ref().unwrap().store()).unwrap();
    let expected =
        iotc::emulator::app::derive_key(facts.sas_keys.primary_key.expose(), "dev-01").unwrap();
    assert_eq!(key, expected.expose());
    // It is HMAC-SHA256 of the device id under the application's group key: a second device
    // gets a different key, and the same device always the same.
    e.call("PUT", "/devices/dev-02", Some(json!({}))).await;
    let (_, c2) = e.call("GET", "/devices/dev-02/credentials", None).await;
    assert_ne!(
        c2["symmetricKey"]["primaryKey"],
        c["symmetricKey"]["primaryKey"]
    );
    let (_, again) = e.call("GET", "/devices/dev-01/credentials", None).await;
    assert_eq!(again, c);
    let (s, _) = e.call("GET", "/devices/none/credentials", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn individual_attestation_crud() {
    let e = Emu::start().await;
    e.call("PUT", "/devices/att-1", Some(json!({}))).await;
    let (s, _) = e.call("GET", "/devices/att-1/attestation", None).await;
    assert_eq!(s, 404);
    let k = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let sym = json!({"type":"symmetricKey","symmetricKey":{"primaryKey": k, "secondaryKey": k}});
    let (s, a) = e
        .call("PUT", "/devices/att-1/attestation", Some(sym.clone()))
        .await;
    assert_eq!((s, &a), (200, &sym));
    let (_, c) = e.call("GET", "/devices/att-1/credentials", None).await;
    assert_eq!(c["symmetricKey"]["primaryKey"], k.as_str());
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let leaf = root
        .issue_device(&"att-1".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    let x = json!({"type":"x509","x509":{"clientCertificates":{"primary":{"certificate": certificate_string(&leaf.cert_pem)}}}});
    let (s, a) = e.call("PUT", "/devices/att-1/attestation", Some(x)).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        a["x509"]["clientCertificates"]["primary"]["info"]["sha1Thumbprint"].as_str(),
        Some(iotc::cert::sha1_thumbprint(&leaf.cert_der).as_str())
    );
    let (_, c) = e.call("GET", "/devices/att-1/credentials", None).await;
    assert!(
        c.get("symmetricKey").is_none() && c["x509"].is_object(),
        "{c}"
    );
    let (s, a) = e
        .call(
            "PATCH",
            "/devices/att-1/attestation",
            Some(json!({"type":"tpm","tpm":{"endorsementKey": k}})),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["type"], "tpm");
    for bad in [
        json!({"type":"symmetricKey","symmetricKey":{"primaryKey":"short","secondaryKey":"short"}}),
        json!({"type":"x509","x509":{"clientCertificates":{"primary":{"certificate":"AAAA"}}}}),
        json!({"type":"x509","x509":{}}),
        json!({"type":"tpm","tpm":{"endorsementKey":""}}),
        json!({"type":"psk"}),
    ] {
        let (s, v) = e
            .call("PUT", "/devices/att-1/attestation", Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let (s, _) = e.call("DELETE", "/devices/att-1/attestation", None).await;
    assert_eq!(s, 204);
    let (s, _) = e.call("DELETE", "/devices/att-1/attestation", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn device_templates_are_stored() {
    let e = Emu::start().await;
    let id = "dtmi:contoso:Thermostat;1";
    let body = json!({"@type":["ModelDefinition","DeviceModel"],"displayName":"Thermostat","capabilityModel":{"@id":"dtmi:contoso:Thermostat;1","@type":"Interface","contents":[]}});
    let (s, t) = e
        .call("PUT", &format!("/deviceTemplates/{id}"), Some(body.clone()))
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["@id"], id);
    assert_eq!(t["capabilityModel"], body["capabilityModel"]);
    let (_, l) = e.call("GET", "/deviceTemplates", None).await;
    assert_eq!(l["value"].as_array().unwrap().len(), 1);
    let (s, t2) = e
        .call(
            "PATCH",
            &format!("/deviceTemplates/{id}"),
            Some(json!({"displayName": "T2"})),
        )
        .await;
    assert_eq!((s, t2["displayName"].as_str()), (200, Some("T2")));
    e.call("PUT", "/devices/uses", Some(json!({"template": id})))
        .await;
    let (s, _) = e
        .call("DELETE", &format!("/deviceTemplates/{id}"), None)
        .await;
    assert_eq!(s, 409);
    e.call("DELETE", "/devices/uses", None).await;
    let (s, _) = e
        .call("DELETE", &format!("/deviceTemplates/{id}"), None)
        .await;
    assert_eq!(s, 204);
    for (tid, b) in [
        ("not-a-dtmi", body.clone()),
        (id, json!({"@type": [], "capabilityModel": {}})),
        (id, json!({"@type": ["ModelDefinition"]})),
    ] {
        let (s, v) = e
            .call("PUT", &format!("/deviceTemplates/{tid}"), Some(b))
            .await;
        assert_eq!(s, 400, "{tid}: {v}");
    }
}
