#!/usr/bin/env bash
# Install tshark (apt) and the Python dependencies, then run the demo on data/ into output/.
#   bash scripts/setup.sh            install + demo
#   bash scripts/setup.sh --no-demo  install only
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v tshark >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    # tshark asks whether non-root users may capture; answer for it (reading files needs no capture rights).
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null
fi
python3 -m pip install -q -r requirements.txt
if [ "${1:-}" != "--no-demo" ]; then
    if [ -f scripts/main.py ]; then
        python3 scripts/main.py TpLinkPlug 192.168.1.135 data/*.pcap -o output
    else
        python3 scripts/packet-translator.py data/*.pcap -o output --device-ip 192.168.1.135
    fi
fi
