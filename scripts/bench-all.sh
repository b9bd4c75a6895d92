#!/usr/bin/env bash
# Every benchmark of the project in one run, on one machine, each next to its comparison:
#   - certificates: rcgen's floor, iotc in memory and on disk, the file system floor, encrypted
#     keys, and a shell loop of the openssl CLI doing the same work (P-256 and RSA-2048);
#   - a CA key in a PKCS#11 token (SoftHSM2): bundles next to a file key, bare signatures (a
#     session per worker, one shared session, one thread), openssl signing through the same
#     token with libp11's engine;
#   - the emulator's IoT Central API (reads and creates at three concurrency levels; device-list
#     pages and full lists at 1,000 / 20,000 / 100,000 devices);
#   - DPS X.509 registrations (sequential and concurrent; root- and intermediate-signed; over
#     HTTPS and over MQTT);
#   - factory batches (`iotc provision`, sequential next to concurrent; the 20 req/s limit;
#     peak memory at 1,000 / 10,000 / 100,000 devices);
#   - the lifecycle: `iotc renew` and `iotc revoke` of 10,000 devices, 20 req/s and off.
#   - key custody: a 10,000-device CSR batch next to a station-key batch of the same size, and
#     four stations sharing the 20 req/s limit (together, each next to the mean).
#   - Entra sign-in: IoT Central calls with a bearer token next to an API token (10 and 1,000
#     users in the directory), and the token requests they made.
#
# Usage: scripts/bench-all.sh [OUTPUT_FOLDER]   (default target/bench-all)
# BENCH_PARTS=a,b,... runs only those parts: cert, hsm, emulator_api, dps, workflow_batch,
# lifecycle, key_custody, entra (default: all).
# The raw output goes to OUTPUT_FOLDER/bench-all.log; docs/benchmarks.md quotes it.
#
# Every benchmark keeps what it writes until the end of the whole run (IOTC_BENCH_KEEP,
# `iotc cert bench --keep`): on ext4 without a journal (this project's machines), deleting many
# files makes every file creation in the next minutes several times slower, which would skew the
# benchmark after. Everything is deleted once, at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/bench-all}
mkdir -p "$out/tmp"
TMPDIR=$(realpath "$out/tmp")
export TMPDIR IOTC_BENCH_KEEP=1
log="$out/bench-all.log"
want() { [ -z "${BENCH_PARTS:-}" ] || [[ ",$BENCH_PARTS," == *",$1,"* ]]; }

cargo build --release --quiet
cargo bench --no-run --quiet

# The token benchmark: SoftHSM2, and libp11's openssl engine for the comparison.
need_apt=()
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
ls /usr/lib/*/engines-3/pkcs11.so >/dev/null 2>&1 || need_apt+=(libengine-pkcs11-openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
hsm="$TMPDIR/softhsm"
mkdir -p "$hsm/tokens"
export SOFTHSM2_CONF="$hsm/softhsm2.conf" IOTC_PKCS11_PIN=bench-pin-2468
echo "directories.tokendir = $hsm/tokens" > "$SOFTHSM2_CONF"
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
    [ -e "$m" ] && export IOTC_PKCS11_MODULE="$m" && break
done
softhsm2-util --init-token --free --label bench --so-pin bench-so-1357 --pin "$IOTC_PKCS11_PIN" >/dev/null
target/release/iotc cert root --name hsm-root --key-store 'pkcs11:token=bench;object=hsm-root' \
    --out "$hsm" >/dev/null

{
    echo "# bench-all: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(uname -sr)"
    echo "# load average before: $(cat /proc/loadavg)"
    echo "# parts: ${BENCH_PARTS:-all}"
    if want cert; then
        echo "## iotc cert bench, ec-p256"
        target/release/iotc cert bench --count 10000 --key-type ec-p256 --openssl-count 200 \
            --encrypted-count 1000 --keep --dir "$TMPDIR"
        echo "## iotc cert bench, rsa-2048"
        target/release/iotc cert bench --count 500 --key-type rsa-2048 --openssl-count 50 \
            --encrypted-count 100 --keep --dir "$TMPDIR"
    fi
    if want hsm; then
        echo "## iotc cert bench --hsm-ca (CA key in SoftHSM2), ec-p256"
        target/release/iotc cert bench --hsm-ca "$hsm/hsm-root" --count 10000 --signatures 10000 \
            --openssl-count 200 --keep --dir "$TMPDIR"
    fi
    if want emulator_api; then
        echo "## emulator_api"
        EMU_BENCH_N=8000 EMU_BENCH_CONCURRENCY=1,8,32 EMU_BENCH_LIST_SIZES=1000,20000,100000 \
            cargo bench --quiet --bench emulator_api
    fi
    if want dps; then
        echo "## dps_register, root-signed devices"
        DPS_BENCH_N=6000 DPS_BENCH_CONCURRENCY=1,8,32,64 cargo bench --quiet --bench dps_register
        echo "## dps_register, intermediate-signed devices"
        DPS_BENCH_INTERMEDIATE=1 DPS_BENCH_N=2000 DPS_BENCH_CONCURRENCY=32 \
            cargo bench --quiet --bench dps_register
        echo "## dps_register over MQTT, root-signed devices (next to the HTTPS lines above)"
        DPS_BENCH_TRANSPORT=mqtt DPS_BENCH_N=6000 DPS_BENCH_CONCURRENCY=1,8,32,64 \
            cargo bench --quiet --bench dps_register
    fi
    if want workflow_batch; then
        echo "## workflow_batch"
        WF_BENCH_N=5000 WF_BENCH_CONCURRENCY=1,64 cargo bench --quiet --bench workflow_batch
    fi
    if want lifecycle; then
        echo "## lifecycle (renew and revoke, 20 req/s and off)"
        LC_BENCH_N=10000 LC_BENCH_CONCURRENCY=64 cargo bench --quiet --bench lifecycle
    fi
    if want key_custody; then
        echo "## key_custody: a CSR batch next to station-made keys; stations sharing the limit"
        KC_BENCH_CSR_N=10000 KC_BENCH_STATIONS=4 KC_BENCH_STATION_N=300 \
            cargo bench --quiet --bench key_custody
    fi
    if want entra; then
        echo "## entra_bearer"
        ENTRA_BENCH_N=4000 ENTRA_BENCH_CONCURRENCY=1,16 ENTRA_BENCH_USERS=10,1000 \
            cargo bench --quiet --bench entra_bearer
    fi
    echo "# load average after: $(cat /proc/loadavg)"
} 2>&1 | tee "$log"

rm -rf "$TMPDIR"
echo "raw figures in $log"
