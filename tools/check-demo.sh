#!/usr/bin/env bash
# ctest sim_demo: runs `msiv2-sim demo --duration S` (it exits 1 when any step fails) and checks
# that the hardware part ran: where swtpm is installed (tools/setup.sh installs it) its steps
# must be in the output, elsewhere the one line saying why it was skipped.
#   check-demo.sh <msiv2-sim> [S]
set -uo pipefail
sim=${1:?usage: check-demo.sh <msiv2-sim> [duration]}
duration=${2:-8}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$sim" demo --duration "$duration" | tee "$out"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  echo "check-demo: msiv2-sim demo exited $rc" >&2
  exit 1
fi
have_swtpm=1
for tool in swtpm swtpm_setup swtpm_ioctl swtpm_localca; do
  command -v "$tool" >/dev/null 2>&1 || have_swtpm=0
done
if [ "$have_swtpm" -eq 0 ]; then
  grep -q "hardware part skipped: no software TPM: " "$out" ||
    { echo "check-demo: swtpm is missing but the demo did not say the hardware part was skipped" >&2; exit 1; }
  exit 0
fi
missing=0
# Each line: a fixed piece of one step of part 3 (a failed step prints FAIL, not ok).
while IFS= read -r want; do
  grep -qF -- "$want" "$out" || { echo "check-demo: missing from the demo's output: '$want'" >&2; missing=1; }
done <<'LINES'
ok    software TPM (swtpm) on loopback
ok    first mtls_pop token (TPM key made, TPM-attested, certificate)
ok    the binding key lives in the TPM
EVP_PKEY of provider msiv2-tpm on swtpm:host=127.0.0.1,port=
ok    export of the TPM key's private half
refused: i2d_PrivateKey
ok    token bound to the TPM key
= SHA-256 of the certificate, whose public key is the TPM key
ok    certificate issued for a TPM-attested key
ok    resource call over mTLS (TLS client signature in the TPM)
HTTP 200: accepted
ok    first token after the reboot
ok    upstream calls of it (simulator counters)
2 upstream calls: getplatformmetadata 1, attestation 0, issuecredential 0, token 1, probe 0: metadata + token only
ok    same TPM key and persisted certificate adopted
ok    resource call with it
ok    swtpm stopped by its pid
LINES
exit "$missing"
