//! Fleet-facing emulator behaviour: keyset paging (a `$skiptoken` is a position, not an
//! offset, and belongs to one list), the 2022-06-30-preview api-version the Azure CLI's IoT
//! extension uses (`$filter`, `$top`, `$orderby`, IoT Edge and gateway devices by `type`),
//! and server certificates for LAN names (`--tls-name`), checked with a rustls client and
//! with `openssl s_client -verify_hostname` / `-verify_ip`.

use crate::common_emulator;

use common_emulator::{Emu, GA, PREVIEW};
use iotc::emulator::tls::TlsName;
use serde_json::{json, Value};

const V0630: &str = "2022-06-30-preview";

fn ids(v: &Value) -> Vec<String> {
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("list in {v}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn put_device(e: &Emu, id: &str, name: &str, template: &str) {
    let (s, v) = e
        .call(
            "PUT",
            &format!("/devices/{id}"),
            Some(json!({"displayName": name, "template": template})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn get(e: &Emu, url: &str, version: &str) -> (u16, Value) {
    let (s, _, v) = e.call_v(Some(&e.token), "GET", url, version, None).await;
    (s, v)
}

#[tokio::test]
async fn a_skiptoken_is_a_position_so_changes_between_pages_lose_nothing() {
    let e = Emu::start().await;
    for i in 0..12 {
        put_device(
            &e,
            &format!("d{i:02}"),
            &format!("Device {i:02}"),
            "dtmi:t:a;1",
        )
        .await;
    }
    let (s, p1) = get(&e, "/devices?maxpagesize=5", PREVIEW).await;
    assert_eq!(s, 200, "{p1}");
    assert_eq!(ids(&p1), ["d00", "d01", "d02", "d03", "d04"]);
    // Deleting from the page already read must not shift the next one (an offset would
    // skip d05), and a device created meanwhile shows up at the end.
    for id in ["d00", "d01"] {
        let (s, _) = e.call("DELETE", &format!("/devices/{id}"), None).await;
        assert_eq!(s, 204);
    }
    put_device(&e, "late", "Late", "dtmi:t:a;1").await;
    let mut seen = ids(&p1);
    let mut next = p1["nextLink"].as_str().map(str::to_owned);
    while let Some(url) = next {
        let (s, p) = get(&e, &url, PREVIEW).await;
        assert_eq!(s, 200, "{p}");
        seen.extend(ids(&p));
        next = p["nextLink"].as_str().map(str::to_owned);
    }
    let mut want: Vec<String> = (0..12).map(|i| format!("d{i:02}")).collect();
    want.push("late".into());
    assert_eq!(seen, want, "every device once, in creation order");
}

#[tokio::test]
async fn ordered_pages_follow_the_name_then_creation_order() {
    let e = Emu::start().await;
    for (id, name) in [
        ("a", "beta"),
        ("b", "Alpha"),
        ("c", "beta"),
        ("d", "gamma"),
        ("e", "alpha"),
        ("f", "Beta"),
    ] {
        put_device(&e, id, name, "dtmi:t:a;1").await;
    }
    for (q, version, want) in [
        (
            "/devices?orderby=displayName&maxpagesize=2",
            PREVIEW,
            ["b", "e", "a", "c", "f", "d"],
        ),
        (
            "/devices?orderby=displayName%20desc&maxpagesize=2",
            PREVIEW,
            ["d", "f", "c", "a", "e", "b"],
        ),
        (
            "/devices?$orderby=displayName&$top=4",
            V0630,
            ["b", "e", "a", "c", "f", "d"],
        ),
    ] {
        let (s, mut page) = get(&e, q, version).await;
        assert_eq!(s, 200, "{q}: {page}");
        let mut seen = ids(&page);
        while let Some(url) = page["nextLink"].as_str().map(str::to_owned) {
            let (s, p) = get(&e, &url, version).await;
            assert_eq!(s, 200, "{p}");
            seen.extend(ids(&p));
            page = p;
        }
        assert_eq!(seen, want, "{q}");
    }
}

#[tokio::test]
async fn a_skiptoken_from_another_list_or_edited_is_refused() {
    let e = Emu::start().await;
    for i in 0..4 {
        put_device(&e, &format!("d{i}"), &format!("Device {i}"), "dtmi:t:a;1").await;
        let (s, v) = e
            .call(
                "PUT",
                &format!("/deviceGroups/g{i}"),
                Some(json!({"displayName": "g", "filter": "SELECT * FROM devices"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, page) = get(&e, "/devices?maxpagesize=1", PREVIEW).await;
    assert_eq!(s, 200);
    let next = page["nextLink"].as_str().expect("a next page").to_owned();
    let token = next
        .split("%24skiptoken=")
        .nth(1)
        .expect("a $skiptoken")
        .to_owned();
    let (s, p) = get(&e, &next, PREVIEW).await;
    assert_eq!((s, ids(&p)), (200, vec!["d1".to_owned()]));

    let refused = |q: String, version: &'static str| {
        let e = &e;
        async move {
            let (s, v) = get(e, &q, version).await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (400, Some("InvalidSkipToken")),
                "{q}: {v}"
            );
        }
    };
    // The same position on another list, under another filter, order or api-version.
    refused(
        format!("/deviceGroups?maxpagesize=1&$skiptoken={token}"),
        PREVIEW,
    )
    .await;
    refused(
        format!("/devices?maxpagesize=1&filter=enabled%20eq%20true&$skiptoken={token}"),
        PREVIEW,
    )
    .await;
    refused(
        format!("/devices?maxpagesize=1&orderby=displayName&$skiptoken={token}"),
        PREVIEW,
    )
    .await;
    refused(format!("/devices?$top=1&$skiptoken={token}"), V0630).await;
    // An edited token: one character of the position changed, the tag kept.
    let mut edited: Vec<u8> = token.clone().into_bytes();
    edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    refused(
        format!("/devices?maxpagesize=1&$skiptoken={edited}"),
        PREVIEW,
    )
    .await;
    // A page size change is allowed: the token names a position, not a page.
    let (s, p) = get(
        &e,
        &format!("/devices?maxpagesize=3&$skiptoken={token}"),
        PREVIEW,
    )
    .await;
    assert_eq!(
        (s, ids(&p)),
        (200, vec!["d1".into(), "d2".into(), "d3".into()])
    );
}

#[tokio::test]
async fn the_azure_cli_edge_filter_works_on_2022_06_30_preview() {
    let e = Emu::start().await;
    for (id, types) in [
        (
            "dtmi:t:edge;1",
            json!([
                "ModelDefinition",
                "DeviceModel",
                "EdgeModel",
                "GatewayModel"
            ]),
        ),
        (
            "dtmi:t:gw;1",
            json!(["ModelDefinition", "DeviceModel", "GatewayModel"]),
        ),
        ("dtmi:t:plain;1", json!(["ModelDefinition", "DeviceModel"])),
    ] {
        let (s, v) = e
            .call_v(
                Some(&e.token),
                "PUT",
                &format!("/deviceTemplates/{id}"),
                V0630,
                Some(json!({"@type": types, "displayName": id, "capabilityModel": {}})),
            )
            .await
            .into_parts();
        assert_eq!(s, 200, "{v}");
    }
    put_device(&e, "edge-1", "Edge one", "dtmi:t:edge;1").await;
    put_device(&e, "gw-1", "Gateway one", "dtmi:t:gw;1").await;
    put_device(&e, "plain-1", "Plain one", "dtmi:t:plain;1").await;
    put_device(&e, "none-1", "No template", "dtmi:t:missing;1").await;
    let (s, v) = e
        .call_v(
            Some(&e.token),
            "PUT",
            "/devices/edge-2",
            PREVIEW,
            Some(json!({"displayName": "Edge by type", "type": ["iotEdge"]})),
        )
        .await
        .into_parts();
    assert_eq!(s, 200, "{v}");

    // What `az iot central device list --edge-only` sends.
    let q = "/devices?$filter=type%20eq%20%27GatewayDevice%27%20or%20type%20eq%20%27EdgeDevice%27";
    let (s, v) = get(&e, q, V0630).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v), ["edge-1", "gw-1", "edge-2"]);
    for d in v["value"].as_array().unwrap() {
        assert!(
            d.get("type").is_none(),
            "2022-06-30-preview has no device type: {d}"
        );
    }
    let (s, v) = get(&e, "/devices?$filter=type%20eq%20%27EdgeDevice%27", V0630).await;
    assert_eq!((s, ids(&v)), (200, vec!["edge-1".into(), "edge-2".into()]));
    let (s, v) = get(&e, "/devices?filter=type%20ne%20%27EdgeDevice%27", PREVIEW).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v), ["gw-1", "plain-1", "none-1"]);
    let (s, v) = get(&e, "/devices?$filter=type%20eq%20%27Robot%27", V0630).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidFilter")),
        "{v}"
    );

    // $top is the page size, repeated in nextLink.
    let (s, v) = get(&e, "/devices?$top=2", V0630).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&v).len(), 2);
    assert!(v["nextLink"].as_str().unwrap().contains("%24top=2"), "{v}");

    // Each version takes its own option names only.
    for (q, version) in [
        ("/devices?filter=enabled%20eq%20true", V0630),
        ("/devices?maxpagesize=2", V0630),
        ("/devices?$filter=enabled%20eq%20true", PREVIEW),
        ("/devices?$top=2", PREVIEW),
        ("/devices?$filter=enabled%20eq%20true", GA),
        ("/enrollmentGroups?$top=2", V0630),
    ] {
        let (s, v) = get(&e, q, version).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidQueryParameter")),
            "{q} on {version}: {v}"
        );
    }
    // Filters the emulator does not evaluate on templates and groups are refused (501).
    let (s, v) = get(
        &e,
        "/deviceTemplates?$filter=displayName%20eq%20%27x%27",
        V0630,
    )
    .await;
    assert_eq!(s, 501, "{v}");

    // Device type can only be written on the version that has it.
    let (s, v) = e
        .call_v(
            Some(&e.token),
            "PUT",
            "/devices/edge-3",
            V0630,
            Some(json!({"displayName": "x", "type": ["iotEdge"]})),
        )
        .await
        .into_parts();
    assert_eq!(s, 400, "{v}");

    // An unknown version names the three the emulator serves.
    let (s, v) = get(&e, "/devices", "2022-05-31").await;
    assert_eq!(s, 400);
    let msg = v["error"]["message"].as_str().unwrap();
    for known in [V0630, GA, PREVIEW] {
        assert!(msg.contains(known), "{msg}");
    }
}

/// (status, body) of a `call_v` answer.
trait Parts {
    fn into_parts(self) -> (u16, Value);
}

impl Parts for (u16, reqwest::header::HeaderMap, Value) {
    fn into_parts(self) -> (u16, Value) {
        (self.0, self.2)
    }
}

#[test]
fn tls_names_parse_as_addresses_or_dns_names() {
    let n = |s: &str| s.parse::<TlsName>();
    assert_eq!(
        n("bench-host.lan"),
        Ok(TlsName::Dns("bench-host.lan".into()))
    );
    assert_eq!(
        n("Bench-Host.LAN"),
        Ok(TlsName::Dns("bench-host.lan".into()))
    );
    assert_eq!(n("192.0.2.10"), Ok(TlsName::Ip([192, 0, 2, 10].into())));
    assert_eq!(
        n("[fd00::10]"),
        Ok(TlsName::Ip("fd00::10".parse().unwrap()))
    );
    for bad in [
        "",
        "*.lan",
        "https://host",
        "host:8443",
        "host.lan.",
        "two words",
    ] {
        assert!(n(bad).is_err(), "{bad:?}");
    }
}

/// The ports of both listeners of an emulator.
fn ports(e: &Emu) -> [u16; 2] {
    let info = e.emu.as_ref().unwrap().info();
    [&info.api_url, &info.dps_endpoint].map(|u| {
        u.rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("a port")
    })
}

#[tokio::test]
async fn tls_names_reach_the_certificate_of_both_listeners() {
    let e = Emu::start_with(|c| {
        c.rate_limit(None).tls_names([
            TlsName::Dns("bench-host.lan".into()),
            TlsName::Ip([192, 0, 2, 10].into()),
        ])
    })
    .await;
    let ca_path = e.emu.as_ref().unwrap().info().ca_cert.clone();
    let ca = std::fs::read(&ca_path).unwrap();
    for port in ports(&e) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // rustls (through reqwest): the LAN name resolved to loopback.
        for (name, ok) in [("bench-host.lan", true), ("other-host.lan", false)] {
            let http = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
                .resolve(name, addr)
                .build()
                .unwrap();
            let r = http.get(format!("https://{name}:{port}/")).send().await;
            assert_eq!(r.is_ok(), ok, "{name} on {port}: {r:?}");
        }
        // openssl: the name and the address checked against the certificate presented on
        // loopback.
        for (flag, value, ok) in [
            ("-verify_hostname", "bench-host.lan", true),
            ("-verify_hostname", "other-host.lan", false),
            ("-verify_ip", "192.0.2.10", true),
            ("-verify_ip", "192.0.2.11", false),
            ("-verify_hostname", "192.0.2.10", false),
        ] {
            // Off the runtime's thread: the emulator serves on it.
            let ca_file = ca_path.clone();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("openssl")
                    .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                    .args(["-CAfile", ca_file.to_str().unwrap(), "-verify_return_error"])
                    .args([flag, value])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .expect("openssl runs")
            })
            .await
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text.contains("Verify return code: 0 (ok)"),
                ok,
                "{flag} {value} on {port}: {text}"
            );
        }
    }
    // Without --tls-name the LAN name is not in the certificate.
    let plain = Emu::start().await;
    let port = ports(&plain)[0];
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(&plain.emu.as_ref().unwrap().info().ca_cert).unwrap(),
        )
        .unwrap()])
        .resolve("bench-host.lan", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    assert!(http
        .get(format!("https://bench-host.lan:{port}/"))
        .send()
        .await
        .is_err());
}
