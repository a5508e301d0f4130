# Sourced by scripts/*: make sure .venv exists and holds the project with its dev extras.
# Re-installs only when pyproject.toml changed since the last install.
ensure_venv() {
  local root stamp
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  stamp="$root/.venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
  if [[ ! -x "$root/.venv/bin/python" ]]; then
    echo "==> creating $root/.venv" >&2
    python3 -m venv "$root/.venv"
  fi
  if [[ ! -f "$stamp" ]]; then
    echo "==> installing inmotion and its dev dependencies into .venv" >&2
    "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
    "$root/.venv/bin/python" -m pip install --quiet -e "$root[dev]"
    rm -f "$root"/.venv/.installed-*
    touch "$stamp"
  fi
  export PATH="$root/.venv/bin:$PATH"
}
