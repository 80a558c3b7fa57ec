#!/usr/bin/env bash
# Install the Debian packages of the real SIP peers the interop tests use, if missing:
#   sip-tester (sipp), baresip, kamailio and kamailio-tls-modules, tshark (RTP counting), openssl.
set -euo pipefail
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v baresip >/dev/null || need+=(baresip)
command -v kamailio >/dev/null || need+=(kamailio)
command -v tshark >/dev/null || need+=(tshark)
command -v openssl >/dev/null || need+=(openssl)
# Kamailio's TLS listener (baresip -> kamailio over TLS in the harness tests) is a separate package.
ls /usr/lib/*/kamailio/modules/tls.so >/dev/null 2>&1 || need+=(kamailio-tls-modules)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing SIP peers: ${need[*]}" >&2
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -q
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo_cmd debconf-set-selections
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${need[@]}"
