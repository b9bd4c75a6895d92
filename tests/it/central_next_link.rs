//! `nextLink` handling against a small loopback server that sends links the emulator never
//! would: relative links, links without api-version, links to another host (refused, because
//! following them would send the credential there) and a link to the page just read.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use iotc::central::{Client, ClientOptions, Credential, Error, ListOptions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One request: its query and its Authorization header.
type Request = (HashMap<String, String>, String);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

async fn devices(
    State(seen): State<Seen>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Json<Value> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.0.lock().unwrap().push((q.clone(), auth));
    let page = q.get("page").map(String::as_str).unwrap_or("1");
    Json(match page {
        // relative link, no api-version: resolved against the app and given ours
        "1" => json!({"value": [{"id": "a"}], "nextLink": "/api/devices?page=2"}),
        "2" => {
            json!({"value": [{"id": "b"}], "nextLink": "https://evil.example.com/api/devices?page=3"})
        }
        _ => json!({"value": []}),
    })
}

async fn loop_page() -> Json<Value> {
    Json(json!({"value": [{"id": "x"}], "nextLink": "/api/roles?api-version=2022-07-31"}))
}

#[tokio::test]
async fn next_links_are_followed_only_on_the_application() {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/api/devices", axum::routing::get(devices))
        .route("/api/roles", axum::routing::get(loop_page))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::new(
        &format!("http://{addr}"),
        Credential::api_token("SharedAccessSignature sr=t&sig=s&skn=k&se=1"),
        Some(ClientOptions {
            rate_limit: None,
            ..ClientOptions::default()
        }),
    )
    .unwrap();
    let mut pager = client.list_devices(&ListOptions::default());
    let p1 = pager.next_page().await.unwrap().unwrap();
    assert_eq!(p1.value[0].id.as_deref(), Some("a"));
    let p2 = pager.next_page().await.unwrap().unwrap();
    assert_eq!(p2.value[0].id.as_deref(), Some("b"));
    let e = pager.next_page().await.unwrap().unwrap_err();
    assert!(matches!(e, Error::ForeignNextLink { .. }), "{e}");
    assert!(
        pager.next_page().await.is_none(),
        "the pager stops after refusing"
    );
    {
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.len(), 2, "nothing was sent to the foreign link");
        assert_eq!(
            seen[1].0.get("api-version").map(String::as_str),
            Some("2022-07-31")
        );
        assert!(seen
            .iter()
            .all(|(_, a)| a.starts_with("SharedAccessSignature ")));
    }

    // a nextLink pointing at the page just read would loop forever: refused
    let e = client.list_roles().collect_all().await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    server.abort();
}
