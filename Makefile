# The two commands: `make run` (the app on the embedded default) and `make test` (the whole suite).
# Both set everything up from nothing first (scripts/setup.sh, idempotent).
# `make check` is the fast lane for the edit-test loop: every test not marked slow (under 2 minutes).
.PHONY: setup run test check demo bench bench-app

# See wanda_engine/__init__.py: OpenMP threads that sleep at once are ~10x faster on small ops here.
export OMP_WAIT_POLICY ?= PASSIVE

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python -m streamlit run app/main.py

test: setup
	.venv/bin/python -m pytest

check: setup
	.venv/bin/python -m pytest -m "not slow" -q

# Headless: prune the embedded model with magnitude and Wanda at 50% and print both perplexities.
demo: setup
	.venv/bin/python -m wanda_engine prune --method magnitude --nsamples 16 --seqlen 256 --eval-windows 10 --eval-seqlen 512
	.venv/bin/python -m wanda_engine prune --method wanda --nsamples 16 --seqlen 256 --eval-windows 10 --eval-seqlen 512

bench: setup
	.venv/bin/python bench/prune_speed.py

# The Compare in a real browser against the same magnitude + Wanda pair from the CLI (ratio, not seconds).
bench-app: setup
	.venv/bin/python bench/app_vs_cli.py
