#!/usr/bin/env bash
# Spec conformance: schemathesis, driven by the official IoT Central OpenAPI file
# (../shared/spec/iotcentral-2022-07-31.json), against the real `iotc emulator` binary.
#
# Checks: no 5xx (not_a_server_error) and every response matches the schema the spec
# documents for its status (response_schema_conformance). Operations: the seed resources
# (organizations, roles, users, apiTokens, devices, deviceGroups, enrollmentGroups,
# deviceTemplates), except DELETE /apiTokens/{tokenId}: the generator learns the admin
# token's id from GET /apiTokens and deletes it, after which every request is a 401
# (revocation is proved by tests/it/emulator_rbac.rs instead). Bounded: SPEC_MAX_EXAMPLES cases per operation (default 25) and
# SPEC_MAX_TIME seconds in all (default 240).
#
# Usage: scripts/spec-conformance.sh [path/to/iotc]   (default: target/debug/iotc)
# Installs schemathesis from PyPI into a venv under ~/.cache/iotc-ci (reused when present).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${1:-target/debug/iotc}
spec=${SPEC_FILE:-$root/../shared/spec/iotcentral-2022-07-31.json}
max_examples=${SPEC_MAX_EXAMPLES:-25}
max_time=${SPEC_MAX_TIME:-240}
cache=${IOTC_CI_CACHE:-$HOME/.cache/iotc-ci}
venv=$cache/venv
st_version=4.32.5

[ -x "$bin" ] || { echo "spec-conformance: no binary at $bin (build it first)" >&2; exit 2; }
[ -f "$spec" ] || { echo "spec-conformance: no spec at $spec" >&2; exit 2; }

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$st_version"; then
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$st_version"
fi

work=$(mktemp -d)
emu_pid=
cleanup() {
  if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; fi
  if [ -n "${SPEC_KEEP:-}" ]; then echo "spec-conformance: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The spec as published has an x-ms-parameterized-host, x-ms-examples pointing at files that
# are not shipped, and a free-form api-version: pin the version, drop the extensions and
# keep only the seed resources so every generated request targets what we emulate.
python3 - "$spec" "$work/spec.json" <<'PY'
import json, re, sys
src, dst = sys.argv[1], sys.argv[2]
d = json.load(open(src))
d.pop("x-ms-parameterized-host", None)
d["parameters"]["Version"]["enum"] = ["2022-07-31"]
keep = re.compile(r"^/(organizations|roles|users|apiTokens|devices|deviceGroups|enrollmentGroups|deviceTemplates)(/\{[A-Za-z]+\})?(/devices|/credentials|/attestation|/certificates/\{entry\}(/generateVerificationCode|/verify)?)?$")
d["paths"] = {p: v for p, v in d["paths"].items() if keep.match(p)}
def strip(o):
    if isinstance(o, dict):
        o.pop("x-ms-examples", None)
        for v in o.values(): strip(v)
    elif isinstance(o, list):
        for v in o: strip(v)
strip(d)
d.pop("security", None); d.pop("securityDefinitions", None)
json.dump(d, open(dst, "w"))
print("spec-conformance: %d paths, %d operations" % (len(d["paths"]),
      sum(len([m for m in v if m != "parameters"]) for v in d["paths"].values())))
PY

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

echo "spec-conformance: emulator at $api_url; $max_examples examples per operation, ${max_time}s at most"
set +e
# schemathesis keeps a cache folder in the working directory: keep it out of the clone.
(cd "$work" && "$venv/bin/schemathesis" run "$work/spec.json" \
  --url "$api_url/api" \
  -H "Authorization: $token" \
  --tls-verify "$ca" \
  --checks not_a_server_error,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$max_examples" \
  --max-time "$max_time" \
  --seed "${SPEC_SEED:-20220731}" \
  --workers 1 \
  --request-timeout 20 \
  --no-color \
  --exclude-operation-id ApiTokens_Remove \
  --report junit,har --report-dir "$work/reports" \
  --output-truncate true)
rc=$?
set -e
mkdir -p "$root/target/schemathesis" && cp "$work"/reports/* "$root/target/schemathesis/" 2>/dev/null || true
# Every status the emulator answered, per operation; a 401 means the admin token stopped
# working and the rest of the run tested nothing, so it fails the run.
python3 - "$work"/reports/har-*.json <<'PY' || rc=1
import json, re, sys, collections
entries = json.load(open(sys.argv[1]))["log"]["entries"]
by_status = collections.Counter(e["response"]["status"] for e in entries)
print("spec-conformance: %d requests; statuses: %s" % (len(entries),
      ", ".join("%d x%d" % (k, v) for k, v in sorted(by_status.items()))))
bad = [e for e in entries if e["response"]["status"] == 401 or e["response"]["status"] >= 500]
for e in bad[:5]:
    print("  %s %s -> %d" % (e["request"]["method"], e["request"]["url"], e["response"]["status"]))
sys.exit(1 if bad else 0)
PY
if ! kill -0 "$emu_pid" 2>/dev/null; then
  echo "spec-conformance: the emulator died during the run" >&2
  tail -50 "$work/emulator.log" >&2
  exit 1
fi
exit $rc
