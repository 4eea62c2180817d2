#!/usr/bin/env bash
# Install everything on Debian/Ubuntu, then run the demo on data/ into output/:
#   - tshark and python3-venv from apt, where missing (with sudo when not root);
#   - a virtual environment .venv made with the system Python (/usr/bin/python3; another one
#     with PYTHON=/path/to/python3), holding the iotsig package (editable: the scripts and
#     tests run the working tree) and its test tools (pyproject.toml's "test" extra).
# Safe to run again: what is already there is kept, and a second run takes a few seconds.
#   bash scripts/setup.sh            install + demo
#   bash scripts/setup.sh --no-demo  install only
set -euo pipefail
cd "$(dirname "$0")/.."

demo=1
for arg in "$@"; do
    case "$arg" in
        --no-demo) demo=0 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: error: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "setup.sh: $*"; }
die() { echo "setup.sh: error: $*" >&2; exit 1; }

if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3
    else PYTHON="$(command -v python3 || true)"; fi
fi
[ -n "$PYTHON" ] && "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null \
    || die "no Python 3.10 or newer (${PYTHON:-python3 not found}): install python3, or set PYTHON=/path/to/python3"

# --- apt: tshark, and venv's ensurepip (Debian and Ubuntu ship it apart as python3.X-venv) ---
apt_packages=()
command -v tshark >/dev/null 2>&1 || apt_packages+=(tshark)
# `python3 -m venv --help` works without ensurepip on Debian; making a venv with pip does not.
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    case "$PYTHON" in
        /usr/bin/*) apt_packages+=("python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv") ;;
        *) die "$PYTHON has no venv/ensurepip module: use another Python (PYTHON=...)" ;;
    esac
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 \
        || die "please install ${apt_packages[*]} (this script knows only apt-get)"
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "installing ${apt_packages[*]} needs root or sudo"
        SUDO=(sudo)
    fi
    say "installing ${apt_packages[*]} with apt-get"
    "${SUDO[@]}" apt-get update -qq
    # tshark asks whether non-root users may capture; answer for it (reading files needs no
    # capture rights).
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | "${SUDO[@]}" debconf-set-selections
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

# --- .venv with the iotsig package and the test tools ---
venv_python=.venv/bin/python
base_of() { "$1" -c 'import sys; print(getattr(sys, "base_prefix", sys.prefix), sys.version)'; }
if [ -e .venv ] && { ! "$venv_python" -m pip --version >/dev/null 2>&1 \
                     || [ "$(base_of "$venv_python")" != "$(base_of "$PYTHON")" ]; }; then
    say "remaking .venv (broken, or made with another Python than $PYTHON)"
    rm -rf .venv
fi
if [ ! -e .venv ]; then
    say "making .venv with $PYTHON ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the declared dependencies changed or the package is not this checkout's.
stamp=.venv/.iotsig-installed
wanted="$(cat pyproject.toml requirements.txt | "$PYTHON" -c \
    'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())') $PWD"
installed_here() {
    [ "$("$venv_python" -c 'import iotsig; print(iotsig.__file__)' 2>/dev/null)" \
        = "$PWD/scripts/iotsig/__init__.py" ]
}
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && installed_here; then
    say "the iotsig package and its dependencies are already in .venv"
else
    say "installing the iotsig package (editable) and its test tools into .venv"
    PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv_python" -m pip install -q -e '.[test]'
    installed_here || die "the iotsig package in .venv is not this checkout's scripts/iotsig"
    echo "$wanted" > "$stamp"
fi

if [ "$demo" = 1 ]; then
    say "demo: main.py on data/*.pcap into output/"
    "$venv_python" scripts/main.py TpLinkPlug 192.168.1.135 data/*.pcap -o output
fi
say "done. Run the scripts with .venv/bin/python scripts/NAME.py (or first: . .venv/bin/activate)"
