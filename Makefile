# The two commands: `make demo` and `make test`. Everything else they need, they install.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch that lies on disk here; GPU users see the README.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
SERVE_PORT ?= 8001

.PHONY: demo test install install-dev lint format migrate models seed web worker clean help \
	frontend frontend-test browser

help:
	@echo "make demo   - install, migrate, prepare models, seed the demo; run web, worker, policy server"
	@echo "make test   - install dev extras, lint (ruff, layers, mypy), and run the whole test suite"

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

# --- web UI: frontend/ built into frontend/dist, served by Django under /static/app/ ----------
# Rebuilt only when its sources, its lockfile or the API (whose schema types the client) change.
NPM := $(shell command -v npm 2>/dev/null)
FRONTEND_SRC := $(shell find frontend/src frontend/public frontend/index.html frontend/vite.config.ts \
	frontend/tsconfig.json -type f -not -name schema.d.ts 2>/dev/null)
API_SRC := $(wildcard config/*.py annotate/*.py training/*.py web/*.py)
SCHEMA_ENV := SECRET_KEY=schema-only DEBUG=0 BROKER_DIR=$(CURDIR)/var/schema-broker

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The API client's types come from the live schema, so they are never stale.
frontend/src/api/schema.d.ts: $(API_SRC) frontend/node_modules/.installed | $(VENV)/.installed
	$(SCHEMA_ENV) $(BIN)/python manage.py spectacular --file frontend/openapi.yaml
	cd frontend && npm run --silent gen:api

frontend/dist/.built: frontend/src/api/schema.d.ts $(FRONTEND_SRC)
	cd frontend && npm run --silent build
	touch $@

ifneq ($(NPM),)
frontend: frontend/dist/.built
frontend-test: frontend/dist/.built
	cd frontend && npx vitest run
else
frontend frontend-test:
	@echo "Node.js/npm not found: the web UI is not built (install Node.js 20+ and rerun make)."
endif

# Debian's Chromium for the browser tests; Playwright never downloads a browser here.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "Install Debian's chromium (/usr/bin/chromium) for tests/e2e."; exit 1; fi; \
	fi

# --- demo: embedded defaults (SQLite in var/, filesystem broker, one worker) ---------------------
# Run as a user would deploy it: DEBUG off (no debug pages listing every URL) and a secret
# generated once into var/secret-key, kept out of git with the rest of var/.
DEMO_SECRET := var/secret-key
DEMO_ENV = DEBUG=0 SECRET_KEY="$$(cat $(DEMO_SECRET))"

$(DEMO_SECRET):
	@mkdir -p var && umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

migrate: install $(DEMO_SECRET)
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput

models: install $(DEMO_SECRET)
	$(DEMO_ENV) $(BIN)/python manage.py prepare_models

seed: migrate
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo

demo: install migrate models seed frontend
	$(DEMO_ENV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo ""
	@echo "Tandem is starting on http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/)"
	@echo "Health: http://$(HOST):$(PORT)/healthz   API docs: http://$(HOST):$(PORT)/api/docs/"
	@echo "Policy server (OpenAI-compatible, your API token as the key): http://$(HOST):$(SERVE_PORT)/v1"
	@$(DEMO_ENV) $(BIN)/python manage.py seed_demo | tail -n 3
	@echo "Press Ctrl-C to stop."
	@trap 'kill 0' INT TERM EXIT; \
	$(DEMO_ENV) $(BIN)/celery -A config worker --pool=solo -Q default,gpu --loglevel=INFO \
		--hostname=demo@%h & \
	$(DEMO_ENV) $(BIN)/celery -A config beat --loglevel=WARNING \
		--schedule=var/celerybeat-schedule & \
	$(DEMO_ENV) $(BIN)/python manage.py serve --host $(HOST) --port $(SERVE_PORT) & \
	$(DEMO_ENV) $(BIN)/gunicorn config.wsgi --bind $(HOST):$(PORT) --workers 2 --threads 4 \
		--access-logfile - ; \
	wait

# --- test: the whole suite on whatever DATABASE_URL / CELERY_BROKER_URL say (default: embedded) --
TEST_ENV := SECRET_KEY=test-only-secret-key DEBUG=0 BROKER_DIR=$(CURDIR)/var/test-broker

# Style, the layer contract (pyproject's [tool.importlinter]) and the type checker.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(SCHEMA_ENV) $(BIN)/mypy

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install-dev lint frontend-test browser
	$(TEST_ENV) $(BIN)/python manage.py prepare_models
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf var/broker var/test-broker var/static var/*.sqlite3*
