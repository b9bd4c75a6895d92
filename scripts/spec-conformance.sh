#!/usr/bin/env bash
# Spec conformance: schemathesis, driven by the official OpenAPI files in ../shared/spec,
# against the real `iotc emulator` binary. Four runs, one emulator:
#
#   1. IoT Central 2022-07-31 (iotcentral-2022-07-31.json), api-version pinned to 2022-07-31;
#   2. IoT Central 2022-10-31-preview (iotcentral-2022-10-31-preview.json), pinned likewise;
#   3. IoT Central 2022-06-30-preview, through the 2022-07-31 file's operations (the
#      preview's own file is not in ../shared/spec), api-version pinned to 2022-06-30-preview;
#   4. the DPS device API 2021-10-01 (dps-device-2021-10-01.json), on the DPS listener.
#
# Checks, every run: no 5xx (not_a_server_error) and every response matches the schema the
# spec documents for its status (response_schema_conformance); any 401 fails the run (the
# credential was lost and the rest of the run tested nothing), and so does a run in which no
# request succeeded (a version refused outright). The script prints the count of
# each status it saw and how long each run took.
#
# IoT Central operations: the seed resources (organizations, roles, users, apiTokens,
# devices, deviceGroups, enrollmentGroups, deviceTemplates), except DELETE
# /apiTokens/{tokenId}: the generator learns the admin token's id from GET /apiTokens and
# deletes it, after which every request is a 401 (revocation is proved by
# tests/it/emulator_rbac.rs instead). Sent with the admin token.
#
# DPS operations: all three (register, operation status, registration status lookup), for
# one registration the generator can reach: a device `spec-conformance-dev` created through
# the API, its SAS token from its credentials (the key derived from the application's SAS
# group, `skn=registration`), `idScope` and `registrationId` pinned to it, and `operationId`
# pinned to the id of a real registration made first, so the generated requests land on a
# registration that exists (valid and invalid bodies, wrong api-versions) rather than on 401s
# and 404s. What is checked there: the status codes and the response schemas
# (`RegistrationOperationStatus`, `DeviceRegistrationResult`, the
# `ProvisioningServiceErrorDetails` of every failure). X.509 identities are covered by
# tests/it/dps_x509.rs (schemathesis cannot present a client certificate per request).
#
# Bounded: SPEC_MAX_EXAMPLES cases per operation (default 25) and SPEC_MAX_TIME seconds in
# all (default 300, shared 3:3:2:2 by the four runs; CI gives 115, to end with fuzzing), so the step stays within 5 minutes.
#
# Usage: scripts/spec-conformance.sh [path/to/iotc]   (default: target/debug/iotc)
#        scripts/spec-conformance.sh --install-only    (only the venv: CI makes it early)
# Installs schemathesis from PyPI into a venv under ~/.cache/iotc-ci (reused when present).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${1:-target/debug/iotc}
specs=${SPEC_DIR:-$root/../shared/spec}
max_examples=${SPEC_MAX_EXAMPLES:-25}
max_time=${SPEC_MAX_TIME:-300}
cache=${IOTC_CI_CACHE:-$HOME/.cache/iotc-ci}
venv=$cache/venv
st_version=4.32.5

install_venv() {
  if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$st_version"; then
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$st_version"
  fi
}
if [ "$bin" = --install-only ]; then install_venv; exit 0; fi

[ -x "$bin" ] || { echo "spec-conformance: no binary at $bin (build it first)" >&2; exit 2; }
for f in iotcentral-2022-07-31.json iotcentral-2022-10-31-preview.json dps-device-2021-10-01.json; do
  [ -f "$specs/$f" ] || { echo "spec-conformance: no spec at $specs/$f" >&2; exit 2; }
done

install_venv

work=$(mktemp -d)
emu_pid=
cleanup() {
  if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; fi
  if [ -n "${SPEC_KEEP:-}" ]; then echo "spec-conformance: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The specs as published have an x-ms-parameterized-host, x-ms-examples pointing at files that
# are not shipped, and a free-form api-version: pin the version, drop the extensions and keep
# only what we emulate, so every generated request targets it.
#   prepare central SRC DST VERSION
#   prepare dps SRC DST ID_SCOPE REGISTRATION_ID OPERATION_ID
prepare() {
python3 - "$@" <<'PY'
import json, re, sys
mode, src, dst = sys.argv[1:4]
d = json.load(open(src))
d.pop("x-ms-parameterized-host", None)
if mode == "central":
    d["parameters"]["Version"]["enum"] = [sys.argv[4]]
    keep = re.compile(r"^/(organizations|roles|users|apiTokens|devices|deviceGroups|enrollmentGroups|deviceTemplates)(/\{[A-Za-z]+\})?(/devices|/credentials|/attestation|/certificates/\{entry\}(/generateVerificationCode|/verify)?)?$")
    d["paths"] = {p: v for p, v in d["paths"].items() if keep.match(p)}
    # What the emulator refuses by design with 501 (docs/emulator.md): `expand`, and the
    # preview's filter/orderby on device groups and templates. Left in, every such request
    # would be a "server error"; they are tested as 501s by tests/it instead.
    for path, item in d["paths"].items():
        for o in item.values():
            drop = {"#/parameters/Expand"}
            if path in ("/deviceGroups", "/deviceTemplates"):
                drop |= {"#/parameters/Filter", "#/parameters/OrderBy"}
            o["parameters"] = [x for x in o.get("parameters", []) if x.get("$ref") not in drop]
else:
    scope, reg, op = sys.argv[4:7]
    d["parameters"]["Azure.Core.Foundations.ApiVersionParameter"]["enum"] = ["2021-10-01"]
    pins = {"idScope": scope, "registrationId": reg, "operationId": op}
    for item in d["paths"].values():
        for o in item.values():
            for prm in o.get("parameters", []):
                if prm.get("in") == "path" and prm.get("name") in pins:
                    prm["enum"] = [pins[prm["name"]]]
                    prm.pop("pattern", None)
    # TPM attestation is refused by design with 501 (docs/dps.md).
    d["definitions"]["DeviceRegistration"]["properties"].pop("tpm", None)
def strip(o):
    if isinstance(o, dict):
        o.pop("x-ms-examples", None)
        for v in o.values(): strip(v)
    elif isinstance(o, list):
        for v in o: strip(v)
strip(d)
d.pop("security", None); d.pop("securityDefinitions", None)
json.dump(d, open(dst, "w"))
print("spec-conformance: %s: %d paths, %d operations" % (src.rsplit("/", 1)[-1], len(d["paths"]),
      sum(len([m for m in v if m != "parameters"]) for v in d["paths"].values())))
PY
}

"$bin" emulator --data-dir "$work/emu" --api-listen 127.0.0.1:0 --dps-listen 127.0.0.1:0 \
  --rate-limit off >"$work/ready.json" 2>"$work/emulator.log" &
emu_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/ready.json" ] && break
  kill -0 "$emu_pid" 2>/dev/null || { cat "$work/emulator.log" >&2; exit 2; }
  sleep 0.1
done
read -r api_url token ca < <(python3 -c '
import json,sys; r=json.loads(open(sys.argv[1]).readline())
print(r["apiUrl"], r["adminToken"].replace(" ", "\x01"), r["caCert"])' "$work/ready.json")
token=${token//$'\x01'/ }

rc=0
# run NAME SPEC URL AUTH SECONDS [schemathesis options]: one schemathesis run and its status
# count; a failure sets rc and the next run still goes.
run() {
  local name=$1 spec=$2 url=$3 auth=$4 secs=$5
  shift 5
  local reports="$work/reports-$name" start=$SECONDS run_rc
  echo "spec-conformance: $name at $url; $max_examples examples per operation, ${secs}s at most"
  set +e
  # schemathesis keeps a cache folder in the working directory: keep it out of the clone.
  (cd "$work" && "$venv/bin/schemathesis" run "$spec" \
    --url "$url" \
    -H "Authorization: $auth" \
    --tls-verify "$ca" \
    --checks not_a_server_error,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$max_examples" \
    --max-time "$secs" \
    --seed "${SPEC_SEED:-20220731}" \
    --workers 1 \
    --request-timeout 20 \
    --no-color \
    --report junit,har --report-dir "$reports" \
    --output-truncate true "$@")
  run_rc=$?
  set -e
  mkdir -p "$root/target/schemathesis/$name" && cp "$reports"/* "$root/target/schemathesis/$name/" 2>/dev/null || true
  # Every status the emulator answered; a 401 means the credential stopped working and the
  # rest of the run tested nothing, so it fails the run.
  python3 - "$name" "$reports"/har-*.json "${pinned_reg:-}" <<'PY' || run_rc=1
import json, sys, collections
name, har, reg = sys.argv[1], sys.argv[2], sys.argv[3]
entries = json.load(open(har))["log"]["entries"]
by_status = collections.Counter(e["response"]["status"] for e in entries)
print("spec-conformance: %s: %d requests; statuses: %s" % (name, len(entries),
      ", ".join("%d x%d" % (k, v) for k, v in sorted(by_status.items()))))
# On DPS a registration id other than the pinned one (negative cases) is rightly a 401: the
# SAS token names one registration. A 401 on the pinned one is a lost credential.
def lost(e):
    return e["response"]["status"] == 401 and (not reg or ("/registrations/%s/" % reg) in e["request"]["url"]
                                               or ("/registrations/%s?" % reg) in e["request"]["url"])
bad = [e for e in entries if lost(e) or e["response"]["status"] >= 500]
for e in bad[:5]:
    print("  %s %s -> %d" % (e["request"]["method"], e["request"]["url"], e["response"]["status"]))
# A run whose every request was refused (a version no longer served answers 400 in the
# documented error shape) checked no resource's schema: it fails.
served = sum(v for k, v in by_status.items() if 200 <= k < 300)
if not served:
    print("  no request succeeded: the run tested no resource")
sys.exit(1 if bad or not entries or not served else 0)
PY
  echo "spec-conformance: $name took $((SECONDS - start)) s (exit $run_rc)"
  [ "$run_rc" -eq 0 ] || rc=1
}

# VERSION:FILE. 2022-06-30-preview (what the Azure CLI's IoT extension sends) has no file in
# ../shared/spec: it is driven by the 2022-07-31 file's operations at its own api-version, as
# its seed resources have the GA's shapes (docs/emulator.md, "API versions"); its own list
# options ($filter, $top, $orderby) are tested by tests/it/emulator_fleet.rs.
central_time=$((max_time * 3 / 10))
alias_time=$((max_time * 2 / 10))
dps_time=$((max_time - 2 * central_time - alias_time))
for pair in 2022-07-31:2022-07-31 2022-10-31-preview:2022-10-31-preview 2022-06-30-preview:2022-07-31; do
  version=${pair%%:*} file=${pair#*:}
  secs=$central_time name="central-$version"
  if [ "$version" != "$file" ]; then secs=$alias_time name="central-$version-by-$file"; fi
  prepare central "$specs/iotcentral-$file.json" "$work/$name.json" "$version"
  run "$name" "$work/$name.json" "$api_url/api" "$token" "$secs" \
    --exclude-operation-id ApiTokens_Remove
done

# DPS: a device the generator can reach, its SAS token, and one real registration whose
# operation id the generated status lookups then use.
read -r dps_url scope reg sas op < <(python3 - "$work/ready.json" "$ca" <<'PY'
import base64, hashlib, hmac, json, ssl, sys, time, urllib.parse, urllib.request
ready = json.loads(open(sys.argv[1]).readline())
ctx = ssl.create_default_context(cafile=sys.argv[2])
def call(method, url, body=None, auth=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if auth: req.add_header("Authorization", auth)
    with urllib.request.urlopen(req, context=ctx) as r:
        return json.loads(r.read() or b"null")
api, token, scope, reg = ready["apiUrl"], ready["adminToken"], ready["idScope"], "spec-conformance-dev"
v = "?api-version=2022-07-31"
call("PUT", f"{api}/api/devices/{reg}{v}", {"displayName": reg}, token)
key = call("GET", f"{api}/api/devices/{reg}/credentials{v}", None, token)["symmetricKey"]["primaryKey"]
sr = urllib.parse.quote(f"{scope}/registrations/{reg}", safe="")
se = str(int(time.time()) + 3600)
sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
sas = f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}&skn=registration"
dps = ready["dpsEndpoint"]
op = call("PUT", f"{dps}/{scope}/registrations/{reg}/register?api-version=2021-10-01", {"registrationId": reg}, sas)["operationId"]
print(dps, scope, reg, sas.replace(" ", "\x01"), op)
PY
)
sas=${sas//$'\x01'/ }
prepare dps "$specs/dps-device-2021-10-01.json" "$work/dps.json" "$scope" "$reg" "$op"
pinned_reg=$reg
run dps-2021-10-01 "$work/dps.json" "$dps_url" "$sas" "$dps_time"

if ! kill -0 "$emu_pid" 2>/dev/null; then
  echo "spec-conformance: the emulator died during the run" >&2
  tail -50 "$work/emulator.log" >&2
  exit 1
fi
exit $rc
