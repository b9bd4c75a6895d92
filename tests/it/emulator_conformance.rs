//! Conformance: every response the emulator gives to the operations it supports is checked
//! against the official OpenAPI files in ../shared/spec (read at test time): the status code
//! must be one the operation declares (or an error under `default`), and the body must match
//! the declared schema — types, required fields, enums, discriminated subtypes, and no
//! property the schema does not define.
//!
//! The checker covers the subset of Swagger 2.0 these files use: `$ref`, `type`,
//! `properties`, `required`, `allOf`, `discriminator` + `x-ms-discriminator-value`, `items`,
//! `enum`, `additionalProperties`, `minItems`/`maxItems`, `minimum`/`maximum`.

use crate::common_emulator;

use common_emulator::{Emu, GA, PREVIEW};
use iotc::central::models::roles;
use iotc::cert::{certificate_string, Authority, CaOptions, LeafOptions};
use serde_json::{json, Map, Value};

struct Spec {
    doc: Value,
}

impl Spec {
    fn load(file: &str) -> Spec {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/spec")
            .join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Spec {
            doc: serde_json::from_str(&text).unwrap(),
        }
    }

    fn resolve<'a>(&'a self, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/definitions/").expect("local ref");
                self.resolve(&self.doc["definitions"][name])
            }
            None => s,
        }
    }

    fn def_name(s: &Value) -> Option<&str> {
        s.get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/definitions/"))
    }

    /// Properties and required fields of a schema with its allOf parents merged.
    fn collect(&self, s: &Value, props: &mut Map<String, Value>, required: &mut Vec<String>) {
        let s = self.resolve(s);
        for parent in s["allOf"].as_array().into_iter().flatten() {
            self.collect(parent, props, required);
        }
        if let Some(p) = s["properties"].as_object() {
            for (k, v) in p {
                props.insert(k.clone(), v.clone());
            }
        }
        for r in s["required"].as_array().into_iter().flatten() {
            required.push(r.as_str().unwrap().to_owned());
        }
    }

    /// The subtype of a discriminated base for this instance, if any.
    fn subtype(&self, base_name: &str, base: &Value, v: &Value) -> Option<&Value> {
        let field = base["discriminator"].as_str()?;
        let value = v.get(field)?.as_str()?;
        let defs = self.doc["definitions"].as_object()?;
        defs.iter()
            .find(|(name, d)| {
                d["allOf"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| Self::def_name(p) == Some(base_name)))
                    && d.get("x-ms-discriminator-value")
                        .and_then(Value::as_str)
                        .unwrap_or(name)
                        == value
            })
            .map(|(_, d)| d)
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        // A discriminated base validates as the subtype the instance names.
        if let Some(name) = Self::def_name(schema) {
            let base = self.resolve(schema);
            if base.get("discriminator").is_some() {
                match self.subtype(name, base, v) {
                    Some(sub) => return self.check_resolved(sub, v, at, errs),
                    None => {
                        errs.push(format!("{at}: no subtype of {name} for {v}"));
                        return;
                    }
                }
            }
        }
        let s = self.resolve(schema);
        self.check_resolved(s, v, at, errs)
    }

    fn check_resolved(&self, s: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        if let Some(e) = s["enum"].as_array() {
            if !e.contains(v) {
                errs.push(format!("{at}: {v} not in enum {e:?}"));
            }
        }
        let is_object_schema =
            s["type"] == "object" || s.get("properties").is_some() || s.get("allOf").is_some();
        match s["type"].as_str() {
            Some("string") if !v.is_string() => {
                errs.push(format!("{at}: expected string, got {v}"))
            }
            Some("boolean") if !v.is_boolean() => {
                errs.push(format!("{at}: expected boolean, got {v}"))
            }
            Some("integer") if !(v.is_i64() || v.is_u64()) => {
                errs.push(format!("{at}: expected integer, got {v}"))
            }
            Some("number") if !v.is_number() => {
                errs.push(format!("{at}: expected number, got {v}"))
            }
            Some("array") => match v.as_array() {
                None => errs.push(format!("{at}: expected array, got {v}")),
                Some(items) => {
                    if let Some(min) = s["minItems"].as_u64() {
                        if (items.len() as u64) < min {
                            errs.push(format!("{at}: fewer than {min} items"));
                        }
                    }
                    if let Some(max) = s["maxItems"].as_u64() {
                        if (items.len() as u64) > max {
                            errs.push(format!("{at}: more than {max} items"));
                        }
                    }
                    for (i, item) in items.iter().enumerate() {
                        self.check(&s["items"], item, &format!("{at}[{i}]"), errs);
                    }
                }
            },
            _ => {}
        }
        if let (Some(min), Some(n)) = (s["minimum"].as_f64(), v.as_f64()) {
            if n < min {
                errs.push(format!("{at}: {n} < minimum {min}"));
            }
        }
        if let (Some(max), Some(n)) = (s["maximum"].as_f64(), v.as_f64()) {
            if n > max {
                errs.push(format!("{at}: {n} > maximum {max}"));
            }
        }
        if is_object_schema {
            let Some(obj) = v.as_object() else {
                errs.push(format!("{at}: expected object, got {v}"));
                return;
            };
            let mut props = Map::new();
            let mut required = Vec::new();
            self.collect(s, &mut props, &mut required);
            for r in &required {
                if !obj.contains_key(r) {
                    errs.push(format!("{at}: missing required {r}"));
                }
            }
            let open = s
                .get("additionalProperties")
                .is_some_and(|a| a != &Value::Bool(false))
                || (props.is_empty() && s["type"] == "object");
            for (k, val) in obj {
                match props.get(k) {
                    Some(ps) => self.check(ps, val, &format!("{at}.{k}"), errs),
                    None if open => {}
                    None => errs.push(format!("{at}: property {k:?} is not in the schema")),
                }
            }
        }
    }

    /// Checks one exchange against the operation `method path_template`.
    fn conforms(&self, method: &str, template: &str, status: u16, body: &Value) -> Vec<String> {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not in the spec");
        let code = status.to_string();
        let resp = if op["responses"].get(&code).is_some() {
            &op["responses"][&code]
        } else if status >= 400 {
            &op["responses"]["default"]
        } else {
            return vec![format!(
                "{method} {template}: status {status} is not declared"
            )];
        };
        let mut errs = Vec::new();
        match resp.get("schema") {
            Some(schema) => self.check(
                schema,
                body,
                &format!("{} {template}", op["operationId"].as_str().unwrap()),
                &mut errs,
            ),
            None if body.is_null() => {}
            None => errs.push(format!(
                "{method} {template}: {status} declares no body, got {body}"
            )),
        }
        errs
    }
}

struct Checker {
    ga: Spec,
    pv: Spec,
    errors: Vec<String>,
    checked: usize,
}

impl Checker {
    async fn run(
        &mut self,
        e: &Emu,
        method: &str,
        path: &str,
        template: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.run_v(e, method, path, template, body, GA).await
    }

    async fn run_v(
        &mut self,
        e: &Emu,
        method: &str,
        path: &str,
        template: &str,
        body: Option<Value>,
        version: &str,
    ) -> (u16, Value) {
        let (s, _, v) = e.call_v(Some(&e.token), method, path, version, body).await;
        let spec = if version == GA { &self.ga } else { &self.pv };
        self.errors
            .extend(spec.conforms(&method.to_lowercase(), template, s, &v));
        self.checked += 1;
        (s, v)
    }
}

#[tokio::test]
async fn responses_match_the_official_spec() {
    let e = Emu::start().await;
    let mut c = Checker {
        ga: Spec::load("iotcentral-2022-07-31.json"),
        pv: Spec::load("iotcentral-2022-10-31-preview.json"),
        errors: Vec::new(),
        checked: 0,
    };
    let o = "/organizations/{organizationId}";
    c.run(
        &e,
        "PUT",
        "/organizations/seattle",
        o,
        Some(json!({"displayName": "Seattle"})),
    )
    .await;
    c.run(
        &e,
        "PUT",
        "/organizations/redmond",
        o,
        Some(json!({"parent": "seattle"})),
    )
    .await;
    c.run(
        &e,
        "PATCH",
        "/organizations/redmond",
        o,
        Some(json!({"displayName": "R"})),
    )
    .await;
    c.run(&e, "GET", "/organizations/redmond", o, None).await;
    c.run(&e, "GET", "/organizations", "/organizations", None)
        .await;
    c.run(&e, "GET", "/organizations/nope", o, None).await;
    c.run(&e, "GET", "/roles", "/roles", None).await;
    c.run(
        &e,
        "GET",
        &format!("/roles/{}", roles::ADMINISTRATOR),
        "/roles/{roleId}",
        None,
    )
    .await;

    let u = "/users/{userId}";
    c.run(
        &e,
        "PUT",
        "/users/u1",
        u,
        Some(json!({"type":"email","email":"a@b.com","roles":[{"role": roles::ADMINISTRATOR}]})),
    )
    .await;
    c.run(&e, "PUT", "/users/u2", u, Some(json!({"type":"servicePrincipal","tenantId":"31ba9b8c-2ad0-4be8-ad01-b6bb3dbe7d0c","objectId":"7ee6d4e7-ef32-4e4f-8d26-ac1b2a5b4d3e","roles":[{"role": roles::ORG_ADMIN,"organization":"seattle"}]}))).await;
    c.run(&e, "PUT", "/users/u3", u, Some(json!({"type":"adGroup","tenantId":"31ba9b8c-2ad0-4be8-ad01-b6bb3dbe7d0c","objectId":"8ee6d4e7-ef32-4e4f-8d26-ac1b2a5b4d3e","roles":[{"role": roles::OPERATOR}]}))).await;
    c.run(
        &e,
        "PATCH",
        "/users/u1",
        u,
        Some(json!({"email":"c@b.com"})),
    )
    .await;
    c.run(&e, "GET", "/users", "/users", None).await;
    c.run(
        &e,
        "PUT",
        "/users/u4",
        u,
        Some(json!({"type":"email","email":"c@b.com","roles":[]})),
    )
    .await;

    let t = "/apiTokens/{tokenId}";
    let (s, tok) = c
        .run(
            &e,
            "PUT",
            "/apiTokens/t1",
            t,
            Some(json!({"roles":[{"role": roles::OPERATOR}]})),
        )
        .await;
    assert_eq!(s, 200, "{tok}");
    c.run(&e, "GET", "/apiTokens/t1", t, None).await;
    c.run(&e, "GET", "/apiTokens", "/apiTokens", None).await;
    c.run(&e, "DELETE", "/apiTokens/t1", t, None).await;

    let tm = "/deviceTemplates/{deviceTemplateId}";
    let tid = "dtmi:contoso:Thermostat;1";
    c.run(&e, "PUT", &format!("/deviceTemplates/{tid}"), tm, Some(json!({"@type":["ModelDefinition","DeviceModel"],"displayName":"T","capabilityModel":{"@id": tid, "@type":"Interface"}}))).await;
    c.run(&e, "GET", &format!("/deviceTemplates/{tid}"), tm, None)
        .await;
    c.run(&e, "GET", "/deviceTemplates", "/deviceTemplates", None)
        .await;

    let d = "/devices/{deviceId}";
    c.run(&e, "PUT", "/devices/d1", d, Some(json!({"displayName":"D1","template": tid,"simulated":true,"enabled":true,"organizations":["seattle"]}))).await;
    c.run(&e, "PUT", "/devices/d2", d, Some(json!({}))).await;
    c.run(
        &e,
        "PATCH",
        "/devices/d1",
        d,
        Some(json!({"enabled": false})),
    )
    .await;
    c.run(&e, "GET", "/devices/d1", d, None).await;
    c.run(&e, "GET", "/devices", "/devices", None).await;
    c.run(
        &e,
        "GET",
        "/devices/d1/credentials",
        "/devices/{deviceId}/credentials",
        None,
    )
    .await;
    let a = "/devices/{deviceId}/attestation";
    c.run(&e, "PUT", "/devices/d2/attestation", a, Some(json!({"type":"symmetricKey","symmetricKey":{"primaryKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","secondaryKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}))).await;
    c.run(&e, "GET", "/devices/d2/attestation", a, None).await;
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    let leaf = root
        .issue_device(&"d1".parse().unwrap(), &LeafOptions::default())
        .unwrap();
    c.run(&e, "PUT", "/devices/d1/attestation", a, Some(json!({"type":"x509","x509":{"clientCertificates":{"primary":{"certificate": certificate_string(&leaf.cert_pem)}}}}))).await;
    c.run(
        &e,
        "GET",
        "/devices/d1/credentials",
        "/devices/{deviceId}/credentials",
        None,
    )
    .await;
    c.run(&e, "DELETE", "/devices/d2/attestation", a, None)
        .await;
    c.run(
        &e,
        "PUT",
        "/devices/d3",
        d,
        Some(json!({"template": "nope"})),
    )
    .await;
    c.run(&e, "GET", "/devices/none", d, None).await;

    let g = "/deviceGroups/{deviceGroupId}";
    c.run(&e, "PUT", "/deviceGroups/g1", g, Some(json!({"displayName":"G","filter":"SELECT * FROM devices WHERE $simulated = true","description":"x","organizations":["seattle"]}))).await;
    c.run(
        &e,
        "PATCH",
        "/deviceGroups/g1",
        g,
        Some(json!({"description":"y"})),
    )
    .await;
    c.run(&e, "GET", "/deviceGroups/g1", g, None).await;
    c.run(&e, "GET", "/deviceGroups", "/deviceGroups", None)
        .await;
    c.run(
        &e,
        "GET",
        "/deviceGroups/g1/devices",
        "/deviceGroups/{deviceGroupId}/devices",
        None,
    )
    .await;
    c.run(
        &e,
        "PUT",
        "/deviceGroups/g2",
        g,
        Some(json!({"displayName":"G","filter":"SELECT nonsense"})),
    )
    .await;

    let eg = "/enrollmentGroups/{enrollmentGroupId}";
    c.run(
        &e,
        "PUT",
        "/enrollmentGroups/sas",
        eg,
        Some(json!({"displayName":"S","type":"iot","attestation":{"type":"symmetricKey"}})),
    )
    .await;
    c.run(&e, "PUT", "/enrollmentGroups/x509", eg, Some(json!({"displayName":"X","type":"iotEdge","enabled":false,"attestation":{"type":"x509"}}))).await;
    c.run(
        &e,
        "PATCH",
        "/enrollmentGroups/sas",
        eg,
        Some(json!({"enabled": false})),
    )
    .await;
    let cert = "/enrollmentGroups/{enrollmentGroupId}/certificates/{entry}";
    c.run(
        &e,
        "PUT",
        "/enrollmentGroups/x509/certificates/primary",
        cert,
        Some(json!({"verified": false, "certificate": certificate_string(root.cert_pem())})),
    )
    .await;
    c.run(
        &e,
        "GET",
        "/enrollmentGroups/x509/certificates/primary",
        cert,
        None,
    )
    .await;
    let (_, code) = c
        .run(
            &e,
            "POST",
            "/enrollmentGroups/x509/certificates/primary/generateVerificationCode",
            "/enrollmentGroups/{enrollmentGroupId}/certificates/{entry}/generateVerificationCode",
            None,
        )
        .await;
    let proof = root
        .issue_verification(
            code["verificationCode"].as_str().unwrap(),
            &LeafOptions::default(),
        )
        .unwrap();
    let verify = "/enrollmentGroups/{enrollmentGroupId}/certificates/{entry}/verify";
    let (s, _) = c
        .run(
            &e,
            "POST",
            "/enrollmentGroups/x509/certificates/primary/verify",
            verify,
            Some(json!({"certificate": certificate_string(&proof.cert_pem)})),
        )
        .await;
    assert_eq!(s, 204);
    c.run(
        &e,
        "POST",
        "/enrollmentGroups/x509/certificates/primary/verify",
        verify,
        Some(json!({"certificate": "AAAA"})),
    )
    .await;
    c.run(&e, "GET", "/enrollmentGroups/x509", eg, None).await;
    c.run(&e, "GET", "/enrollmentGroups", "/enrollmentGroups", None)
        .await;
    c.run(
        &e,
        "DELETE",
        "/enrollmentGroups/x509/certificates/primary",
        cert,
        None,
    )
    .await;

    // The preview spec: list options, idScope, device type.
    c.run_v(
        &e,
        "GET",
        "/devices?maxpagesize=1&filter=enabled%20eq%20false&orderby=displayName",
        "/devices",
        None,
        PREVIEW,
    )
    .await;
    c.run_v(
        &e,
        "PUT",
        "/devices/edge-1",
        d,
        Some(json!({"type": ["iotEdge"]})),
        PREVIEW,
    )
    .await;
    c.run_v(&e, "GET", "/devices/edge-1", d, None, PREVIEW)
        .await;
    c.run_v(&e, "GET", "/enrollmentGroups/sas", eg, None, PREVIEW)
        .await;
    c.run_v(
        &e,
        "GET",
        "/deviceGroups/g1/devices?maxpagesize=5",
        "/deviceGroups/{deviceGroupId}/devices",
        None,
        PREVIEW,
    )
    .await;
    c.run_v(
        &e,
        "GET",
        "/devices?maxpagesize=500",
        "/devices",
        None,
        PREVIEW,
    )
    .await;

    // Deletes last.
    c.run(&e, "DELETE", "/deviceGroups/g1", g, None).await;
    c.run(&e, "DELETE", "/devices/d1", d, None).await;
    c.run(&e, "DELETE", "/users/u1", u, None).await;
    c.run(&e, "DELETE", "/enrollmentGroups/sas", eg, None).await;

    assert!(c.checked >= 60, "{} exchanges", c.checked);
    assert!(
        c.errors.is_empty(),
        "{} conformance errors:\n{}",
        c.errors.len(),
        c.errors.join("\n")
    );
}

/// The checker itself must catch what it claims to catch.
#[test]
fn the_checker_finds_schema_violations() {
    let spec = Spec::load("iotcentral-2022-07-31.json");
    let dev = json!({"$ref": "#/definitions/Device"});
    let mut errs = Vec::new();
    spec.check(
        &dev,
        &json!({"id": "a", "enabled": "yes", "colour": 1}),
        "Device",
        &mut errs,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    let mut errs = Vec::new();
    spec.check(
        &json!({"$ref": "#/definitions/User"}),
        &json!({"type": "email", "roles": [{"role": "r"}]}),
        "User",
        &mut errs,
    );
    assert!(
        errs.iter().any(|e| e.contains("missing required email")),
        "{errs:?}"
    );
    let mut errs = Vec::new();
    spec.check(
        &json!({"$ref": "#/definitions/Attestation"}),
        &json!({"type": "nope"}),
        "A",
        &mut errs,
    );
    assert_eq!(errs.len(), 1);
    let mut errs = Vec::new();
    spec.check(
        &json!({"$ref": "#/definitions/EnrollmentGroup"}),
        &json!({"displayName": "g", "type": "iotHub", "attestation": {"type": "x509"}}),
        "EG",
        &mut errs,
    );
    assert!(errs.iter().any(|e| e.contains("enum")), "{errs:?}");
    let errs = spec.conforms("put", "/devices/{deviceId}", 201, &json!({}));
    assert_eq!(errs.len(), 1, "undeclared success status");
    let errs = spec.conforms(
        "get",
        "/devices/{deviceId}",
        404,
        &json!({"error": {"code": "x"}}),
    );
    assert!(
        errs.iter().any(|e| e.contains("missing required message")),
        "{errs:?}"
    );
}
