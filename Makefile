# welfare-exchange: every target sets itself up; on a fresh machine each is one command.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := source scripts/env.sh &&
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := openssh-server openssh-client libreoffice-calc-nogui python3-uno dovecot-imapd docker-compose chromium

.PHONY: install system-deps demo demo-referral test lint bench up clean

install: system-deps $(VENV)/.installed
	@$(ENV) welfare-exchange db upgrade
	@$(ENV) if [ ! -f "$$AIRFLOW_HOME/.migrated" ] || [ constraints.txt -nt "$$AIRFLOW_HOME/.migrated" ]; then \
		airflow db migrate > "$$WELFARE_EXCHANGE_HOME/airflow-migrate.log" 2>&1 && touch "$$AIRFLOW_HOME/.migrated"; fi

# Debian packages the tests and the demo run for real: OpenSSH (the SFTP server), LibreOffice
# (writes the Standard/RC4-encrypted test files), dovecot (IMAP), docker-compose (validates the
# compose file). Installed only when missing.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing > /dev/null; fi

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	@$(PY) -m pip install -q --no-deps -e .
	@touch $@

demo: install
	@$(ENV) $(PY) -m welfare_exchange.devtools.demo

demo-referral: install
	@$(ENV) $(PY) -m welfare_exchange.devtools.demo --referral --workspace var/demo-referral

test: install
	@$(ENV) $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check dags include plugins tests bench

bench: install
	@$(ENV) $(PY) -m bench

up: install
	@$(ENV) $(PY) -m welfare_exchange.devtools.up

clean:
	rm -rf var
