# The two commands: `make demo` and `make test`. Everything else they need, they install.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch that lies on disk here; GPU users see the README.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test install install-dev lint format migrate models seed web worker clean help

help:
	@echo "make demo   - install, migrate, prepare models, seed the demo and run web + worker"
	@echo "make test   - install dev extras, lint, and run the whole test suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# --- demo: embedded defaults (SQLite in var/, filesystem broker, one worker) ---------------------
DEMO_ENV := DEBUG=1

migrate: install
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput

models: install
	$(DEMO_ENV) $(BIN)/python manage.py prepare_models

seed: migrate
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo

demo: install migrate models seed
	$(DEMO_ENV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo ""
	@echo "Tandem is starting on http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/)"
	@echo "Health: http://$(HOST):$(PORT)/healthz   API docs: http://$(HOST):$(PORT)/api/docs/"
	@$(DEMO_ENV) $(BIN)/python manage.py seed_demo | tail -n 3
	@echo "Press Ctrl-C to stop."
	@trap 'kill 0' INT TERM EXIT; \
	$(DEMO_ENV) $(BIN)/celery -A config worker --pool=solo -Q default,gpu --loglevel=INFO \
		--hostname=demo@%h & \
	$(DEMO_ENV) $(BIN)/celery -A config beat --loglevel=WARNING \
		--schedule=var/celerybeat-schedule & \
	$(DEMO_ENV) $(BIN)/gunicorn config.wsgi --bind $(HOST):$(PORT) --workers 2 --threads 4 \
		--access-logfile - ; \
	wait

# --- test: the whole suite on whatever DATABASE_URL / CELERY_BROKER_URL say (default: embedded) --
TEST_ENV := SECRET_KEY=test-only-secret-key DEBUG=0 BROKER_DIR=$(CURDIR)/var/test-broker

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install-dev lint
	$(TEST_ENV) $(BIN)/python manage.py prepare_models
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf var/broker var/test-broker var/static var/*.sqlite3*
