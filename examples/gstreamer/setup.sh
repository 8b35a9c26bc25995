#!/usr/bin/env bash
# Set up the edgekdclassify GStreamer element: GStreamer + gst-python system packages (Debian/Ubuntu/JetPack apt
# names, from edgekd.gst.SYSTEM_PACKAGES) and the `gi` module visible to PYTHON (a venv's python, default .venv).
#
#   examples/gstreamer/setup.sh [PYTHON]        # `make gst` runs it; root or sudo installs the packages
#   eval "$(edgekd gst-path --env)"             # then gst-launch-1.0 finds the element
#
# gi for the venv: the system's gi (python3-gi + the python3-gst-1.0 overrides) is linked into the venv, which needs
# the venv's python to have the system python3's major.minor (the overrides are a compiled module).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup.sh: run as root (or install sudo) to: $*" >&2; return 1; fi
}

apt_install() {  # the packages of "$@" that are not installed yet
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} = 0 ] && return 0
    command -v apt-get >/dev/null || { echo "setup.sh: no apt-get; install the equivalents of: ${missing[*]}" >&2; return 1; }
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pkgs=$("$PY" -c "from edgekd.gst import SYSTEM_PACKAGES; print(' '.join(SYSTEM_PACKAGES))")
# shellcheck disable=SC2086
apt_install $pkgs

if ! "$PY" -c "import gi" 2>/dev/null; then
    sys_ver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
    venv_ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    purelib=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    sys_gi=$(/usr/bin/python3 -c 'import gi, os; print(os.path.dirname(gi.__file__))' 2>/dev/null || true)
    if [ "$sys_ver" = "$venv_ver" ] && [ -n "$sys_gi" ]; then
        ln -sfn "$sys_gi" "$purelib/gi"
        echo "setup.sh: linked the system gi ($sys_gi, python $sys_ver) into $purelib"
    else
        # PyGObject builds with pip, but gst-python's overrides (Gst.Buffer.map, Gst.ValueArray: the _gi_gst module)
        # come only compiled for the system python, so the venv must be made with that python
        echo "setup.sh: the venv's python is $venv_ver, GStreamer's python bindings are for the system python3" \
             "($sys_ver); recreate the venv with it: rm -rf .venv && make venv PYTHON=/usr/bin/python3" \
             "(Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi

"$PY" -c "from edgekd.gst import register; assert register(); print('setup.sh: edgekdclassify registers in', __import__('sys').executable)"
env_lines=$("$PY" -m edgekd gst-path --env)
eval "$env_lines"
if gst-inspect-1.0 edgekdclassify >/dev/null 2>&1; then
    echo "setup.sh: gst-inspect-1.0 finds edgekdclassify with: eval \"\$(edgekd gst-path --env)\""
else
    echo "setup.sh: gst-inspect-1.0 does not find edgekdclassify (is gstreamer1.0-python3-plugin-loader installed, and is" \
         "the system python the venv's major.minor?); in-process use (edgekd.gst.register()) works" >&2
fi
