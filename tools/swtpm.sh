#!/usr/bin/env bash
# A software TPM 2.0 (swtpm) on loopback, for tests, the demo and users without a TPM.
#
#   tools/swtpm.sh start DIR   creates the TPM state in DIR on first use (an RSA and an ECC
#                              endorsement key with EK certificates signed by a local CA that
#                              lives in DIR/localca; no system file is read for writing or
#                              changed), then starts swtpm on two free 127.0.0.1 ports (server
#                              and control) and prints, one per line:
#                                MSIV2_TPM_TCTI=swtpm:host=127.0.0.1,port=N
#                                MSIV2_TPM_EK_CA=DIR/localca/ek-ca.pem
#                              (the local CA's root and the issuing certificate that signed
#                              the EK certificates: what msiv2-sim serve --tpm-ek-ca trusts)
#                                MSIV2_TPM_PID=PID
#                              (`eval "$(tools/swtpm.sh start DIR)"` sets them in a shell).
#                              When swtpm already runs on DIR, prints the same lines again.
#                              A restart reuses the previous ports when they are free, so a
#                              TCTI string stays valid across a stop and start.
#   tools/swtpm.sh stop DIR    asks swtpm to save its state and exit (swtpm_ioctl -s), waits
#                              for the process (up to 10 s), then SIGKILLs it if it still runs.
#                              Nothing to do when it does not run.
#   tools/swtpm.sh status DIR  prints the lines above and exits 0 when running, else exits 1.
#   tools/swtpm.sh init DIR    only creates the TPM state (when missing) and prints the
#                              MSIV2_TPM_EK_CA line (for callers that run swtpm themselves).
#
# swtpm serves one TCP client at a time: give each parallel user its own DIR.
# Exit codes: 0 ok, 1 failure (message on stderr), 2 usage, 77 swtpm is not installed.
set -euo pipefail

usage() { sed -n '2,24p' "$0" >&2; exit 2; }
die() { echo "swtpm.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case "$cmd" in start|stop|status|init) ;; *) usage ;; esac

for tool in swtpm swtpm_setup swtpm_ioctl swtpm_localca; do
  command -v "$tool" >/dev/null 2>&1 ||
    { echo "swtpm.sh: '$tool' is not installed (apt-get install swtpm swtpm-tools)" >&2; exit 77; }
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
state="$dir/tpmstate"
localca="$dir/localca"
pidfile="$dir/swtpm.pid"
portfile="$dir/ports"
logfile="$dir/swtpm.log"
root_ca="$localca/swtpm-localca-rootca-cert.pem"
ek_ca="$localca/ek-ca.pem"

# The EK CA bundle: the root and the intermediate (issuercert.pem) that signs the EK
# certificates; a verifier with the root alone cannot build the chain.
write_ek_ca() {
  [ -f "$ek_ca" ] && return 0
  [ -f "$root_ca" ] && [ -f "$localca/issuercert.pem" ] ||
    die "the local CA in $localca lacks $root_ca or issuercert.pem"
  cat "$root_ca" "$localca/issuercert.pem" > "$ek_ca.tmp" && mv "$ek_ca.tmp" "$ek_ca"
}

# The pid in the pid file when that process is alive and is swtpm on this state directory.
running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(tr -dc '0-9' < "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "dir=$state" || return 1
  echo "$pid"
}

print_env() {
  local server
  read -r server _ < "$portfile"
  echo "MSIV2_TPM_TCTI=swtpm:host=127.0.0.1,port=$server"
  echo "MSIV2_TPM_EK_CA=$ek_ca"
  echo "MSIV2_TPM_PID=$1"
}

# Nothing listens on 127.0.0.1:$1 (a connect fails); swtpm's own bind settles any race.
port_free() {
  ! (: < "/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# First use: TPM state with EK certificates from a local CA, configured only by files in DIR.
create_state() {
  mkdir -p "$localca" "$state"
  chmod 700 "$dir" "$localca" "$state"
  cat > "$dir/swtpm-localca.conf" <<EOF
statedir = $localca
signingkey = $localca/signkey.pem
issuercert = $localca/issuercert.pem
certserial = $localca/certserial
EOF
  cat > "$dir/swtpm-localca.options" <<EOF
--platform-manufacturer msiv2
--platform-version 2.1
--platform-model swtpm
EOF
  cat > "$dir/swtpm_setup.conf" <<EOF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $dir/swtpm-localca.conf
create_certs_tool_options = $dir/swtpm-localca.options
active_pcr_banks = sha256
EOF
  if ! swtpm_setup --tpm2 --tpmstate "$state" --config "$dir/swtpm_setup.conf" \
      --create-ek-cert --create-platform-cert --lock-nvram --overwrite \
      > "$dir/swtpm_setup.log" 2>&1; then
    cat "$dir/swtpm_setup.log" >&2
    rm -rf "$state"
    die "swtpm_setup failed for $state (log above)"
  fi
  [ -f "$root_ca" ] || die "swtpm_setup did not create the EK CA $root_ca"
  write_ek_ca
}

start() {
  local pid
  if pid=$(running_pid); then
    print_env "$pid"
    return 0
  fi
  rm -f "$pidfile"
  [ -f "$state/tpm2-00.permall" ] || create_state
  write_ek_ca

  local server ctrl attempt
  if [ -f "$portfile" ]; then read -r server ctrl < "$portfile"; fi
  for attempt in $(seq 1 20); do
    if [ -z "${server:-}" ] || ! port_free "$server" || ! port_free "$ctrl"; then
      server=$(( 20000 + (RANDOM * 32768 + RANDOM) % 20000 * 2 ))
      ctrl=$(( server + 1 ))
      port_free "$server" && port_free "$ctrl" || { server=""; continue; }
    fi
    if swtpm socket --tpm2 --tpmstate "dir=$state" \
        --server "type=tcp,port=$server,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$ctrl,bindaddr=127.0.0.1" \
        --flags not-need-init,startup-clear \
        --pid "file=$pidfile" --log "file=$logfile" --daemon >> "$logfile" 2>&1; then
      if pid=$(running_pid); then
        echo "$server $ctrl" > "$portfile"
        print_env "$pid"
        return 0
      fi
    fi
    # Lost a race for the ports (or swtpm exited at once): try another pair.
    server=""
    sleep 0.1
  done
  tail -n 20 "$logfile" >&2 2>/dev/null || true
  die "could not start swtpm on $state (log: $logfile)"
}

stop() {
  local pid server ctrl i
  pid=$(running_pid) || { rm -f "$pidfile"; return 0; }
  read -r server ctrl < "$portfile"
  # Graceful: swtpm saves its volatile state and exits (takes about a second).
  swtpm_ioctl --tcp "127.0.0.1:$ctrl" -s >/dev/null 2>&1 || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  echo "swtpm.sh: swtpm $pid did not exit within 10 s of swtpm_ioctl -s: killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$pidfile"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  init) [ -f "$state/tpm2-00.permall" ] || create_state; write_ek_ca; echo "MSIV2_TPM_EK_CA=$ek_ca" ;;
  status) pid=$(running_pid) || exit 1; print_env "$pid" ;;
esac
