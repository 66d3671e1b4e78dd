#!/usr/bin/env bash
# Creates the files kustomize's secretGenerator turns into the Secrets quantd-auth and quantd-tls
# (deploy/k8s/kustomization.yaml). Nothing secret is committed: the output directory is
# gitignored. Needs only openssl.
#
#   deploy/k8s/make-secrets.sh [--namespace NS] [--out DIR] [--force]
#     --namespace NS  namespace the Service lives in, for the SAN quantd.NS.svc (default: default)
#     --out DIR       where to write (default: deploy/k8s/secrets beside this script)
#     --force         overwrite existing files (otherwise the script refuses and changes nothing)
#
# Writes into DIR:
#   tokens   two random bearer tokens, `read <hex>` and `write <hex>`   -> Secret quantd-auth
#   ca.crt   a self-signed CA (10 years)                                -> Secret quantd-tls
#   tls.crt  the server certificate, signed by the CA (825 days)        -> Secret quantd-tls
#   tls.key  its private key                                            -> Secret quantd-tls
#   ca.key   the CA's private key, to sign client certificates if QUANTD_TLS_CLIENT_CA is set.
#            It is NOT put into any Secret: keep it off the cluster.
set -euo pipefail

namespace=default
out="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets"
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) namespace="${2:?--namespace needs a value}"; shift 2 ;;
    --namespace=*) namespace="${1#*=}"; shift ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "make-secrets: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]]; then
  echo "make-secrets: '$namespace' is not a valid namespace name" >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "make-secrets: openssl not found" >&2; exit 1; }

FILES=(tokens ca.crt ca.key tls.crt tls.key)
umask 077
mkdir -p "$out"
if [ "$force" -eq 0 ]; then
  existing=()
  for f in "${FILES[@]}"; do [ -e "$out/$f" ] && existing+=("$out/$f"); done
  if [ "${#existing[@]}" -gt 0 ]; then
    echo "make-secrets: refusing to overwrite ${existing[*]} (use --force)" >&2
    exit 1
  fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Tokens: 32 random bytes each, hex.
{
  echo "# quantd tokens: one '<read|write> <token>' per line; '#' starts a comment"
  echo "read $(openssl rand -hex 32)"
  echo "write $(openssl rand -hex 32)"
} >"$work/tokens"

# CA: ECDSA P-256, self-signed, may only sign certificates.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -sha256 -days 3650 -subj "/CN=quantd CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$work/ca.crt"

# Server certificate for the Service, the StatefulSet pod and port-forwards to localhost.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/tls.key"
openssl req -new -key "$work/tls.key" -subj "/CN=quantd" -out "$work/tls.csr"
cat >"$work/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:quantd,DNS:quantd.${namespace},DNS:quantd.${namespace}.svc,DNS:quantd.${namespace}.svc.cluster.local,DNS:quantd-0.quantd-headless,DNS:quantd-0.quantd-headless.${namespace}.svc,DNS:localhost,IP:127.0.0.1
EOF
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -CAcreateserial -sha256 -days 825 -extfile "$work/server.ext" -out "$work/tls.crt" 2>/dev/null
openssl verify -CAfile "$work/ca.crt" "$work/tls.crt" >/dev/null

# The server runs as uid 10001 but the kubelet projects Secret files itself; these are only
# read by kustomize on this machine, so owner-only is right.
for f in "${FILES[@]}"; do
  mv -f "$work/$f" "$out/$f"
done
chmod 600 "$out"/{tokens,ca.key,tls.key}
chmod 644 "$out"/{ca.crt,tls.crt}
echo "make-secrets: wrote ${FILES[*]} to $out (namespace $namespace)"
echo "make-secrets: keep ca.key off the cluster (it is in no Secret)"
