# Shared by ./scripts/try and ./scripts/test (sourced, not run): everything a fresh Debian machine
# needs before Cairn runs — a new enough Python, the Debian packages the chosen scope needs (the one
# list is engine/core/doctor.py; `cairn doctor` reads the same), and .venv with Cairn installed.
# Each stage says what it does before it does it: the first run installs for a minute or two.

step() { printf '\n==> %s\n' "$*" >&2; }

need_python() {
  if ! command -v python3 > /dev/null; then
    echo "Cairn needs Python 3.11 or newer; python3 is not installed (Debian: apt-get install python3 python3-venv)" >&2
    exit 2
  fi
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "Cairn needs Python 3.11 or newer (python3 is $(python3 --version 2>&1))" >&2; exit 2; }
}

# system_packages SCOPE: install the Debian packages SCOPE (try or test) needs and lacks. As root it
# installs them; otherwise it prints the exact command and stops before anything was changed.
system_packages() {
  local scope=$1 missing
  missing=$(python3 -m engine.core.doctor --packages "$scope") || exit 2
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    {
      echo "Cairn needs these Debian packages for ./scripts/$scope, and they are not installed: $missing"
      echo "Install them as root, then run this again:"
      echo
      echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing"
      echo
      echo "(\`python3 -m engine.core.doctor --for $scope\` says what each one is for.) Nothing was changed."
    } >&2
    exit 2
  fi
  if ! command -v apt-get > /dev/null; then
    echo "Cairn needs the programs of these Debian packages: $missing; this machine has no apt-get," \
      "so install them with its own package manager (\`python3 -m engine.core.doctor\` lists them)" >&2
    exit 2
  fi
  step "installing Debian packages for ./scripts/$scope: $missing"
  # shellcheck disable=SC2086  # one word per package
  apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing \
    || { echo "apt-get could not install: $missing" >&2; exit 2; }
  missing=$(python3 -m engine.core.doctor --packages "$scope") || exit 2
  if [ -n "$missing" ]; then
    echo "still missing after apt-get: $missing (see \`python3 -m engine.core.doctor --for $scope\`)" >&2
    exit 2
  fi
}

# python_env EXTRAS: .venv with Cairn installed in editable mode (EXTRAS: "" or "[test]"). Skipped when
# .venv already has this pyproject.toml's dependencies with those extras (a "[test]" install serves "").
python_env() {
  local extras=$1 stamp=.venv/.cairn-installed hash
  hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$hash" ] \
    && { [ -z "$extras" ] || grep -qxF -- "$extras" "$stamp"; }; then
    return 0
  fi
  if [ ! -x .venv/bin/python ]; then
    step "creating the Python environment .venv"
    python3 -m venv .venv || { echo "python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 2; }
  fi
  step "installing Cairn$extras and its Python dependencies into .venv (about half a minute the first time)"
  # pip's own progress lines show; "already satisfied" and unreachable extra-index lines do not.
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e ".$extras" 2>&1 \
    | { grep -v -e 'WARNING: Location' -e '^Requirement already satisfied' >&2 || true; }
  if [ "${PIPESTATUS[0]}" -ne 0 ] || ! .venv/bin/python -c 'import engine.cli' 2> /dev/null; then
    echo "installing Cairn into .venv failed; see pip's messages above" >&2
    exit 2
  fi
  printf '%s\n%s\n' "$hash" "$extras" > "$stamp"
}
