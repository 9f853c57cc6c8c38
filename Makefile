# The two commands of the README contract: `make demo` and `make test`.
# Both install what is missing first (Debian packages, a project venv).
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PKGS := rabbitmq-server keepalived haproxy iproute2 tcpdump iperf3 wrk nginx-light procps curl chromium chromium-driver
STAMP := $(VENV)/.installed

.PHONY: deps apt-deps py-deps demo test test-unit test-netns stress bench lint typecheck clean
.PHONY: install-systemd install-venv install-units uninstall-systemd

deps: apt-deps py-deps

apt-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# "compat" editable mode: a plain path in a .pth file. The default mode's import hook costs every
	# interpreter start (pathlib & co.), about 0.2 MiB of RSS in the idle vrrpd; fall back when setuptools
	# no longer has the transitional mode
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat 2>/dev/null \
	  || $(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

py-deps: $(STAMP)

demo: deps
	$(PY) -m netns.demo

# `make test` runs everything the README promises: a missing capability (root, network namespaces, RabbitMQ,
# keepalived, HAProxy, Chromium, ...) FAILS its tests instead of skipping them (netns/plugin.py; so does a set
# CI variable). Only documented kernel limits (no sch_netem, IPv6 disabled) skip. `make test-unit` keeps the
# skips, even in CI. docs/development.md, "Skips and CI".
#
# The suite runs on TEST_WORKERS pytest-xdist workers (most of its time is spent waiting on VRRP timers and
# RabbitMQ): `--dist loadgroup` keeps every test of the shared RabbitMQ lab on one worker (netns/plugin.py).
# TEST_WORKERS=0 runs it in one process. docs/development.md, "How the suite runs".
TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup)

test: deps lint typecheck
	RMQFD_REQUIRE_ALL=1 $(PY) -m pytest -q $(XDIST) --durations=40 tests

test-unit: py-deps
	RMQFD_REQUIRE_ALL=0 $(PY) -m pytest -q tests -m "not netns and not slow"

test-netns: deps
	RMQFD_REQUIRE_ALL=1 $(PY) -m pytest -q $(XDIST) tests -m netns

stress: deps
	$(PY) -m pytest -q tests/stack -m stress --stress

bench: deps
	$(PY) -m bench all

lint: py-deps
	$(PY) -m ruff check vrrpd tcplb netns bench rmqfd tests
	$(PY) -m ruff format --check vrrpd tcplb netns bench rmqfd tests

typecheck: py-deps
	$(PY) -m mypy

# systemd units (README "Running under systemd"): the daemons in a virtualenv at PREFIX, the units from
# systemd/ with ExecStart pointing into it, a `tcplb` system user, /etc/vrrpd and /etc/tcplb with the examples
# as *.example (existing configuration is never touched). `systemctl daemon-reload` runs only when systemd is
# the init system. DESTDIR (tests, packaging) stages units and /etc only: no user, no systemctl.
PREFIX ?= /opt/rmq-frontdoor
UNITDIR ?= /etc/systemd/system
DESTDIR ?=
SD_UNITS := vrrpd tcplb
SD_RUNNING = [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]

install-systemd: install-venv install-units

install-venv:
	@test -x $(PREFIX)/bin/python || $(PY_BOOT) -m venv $(PREFIX)
	$(PREFIX)/bin/python -m pip install -q --upgrade pip
	$(PREFIX)/bin/python -m pip install -q .
	@touch $(PREFIX)/.rmq-frontdoor

install-units:
	@for u in $(SD_UNITS); do test -x $(PREFIX)/bin/$$u || { echo "$(PREFIX)/bin/$$u not found: make install-systemd, or set PREFIX"; exit 1; }; done
	install -d -m 755 $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/vrrpd $(DESTDIR)/etc/tcplb
	for u in $(SD_UNITS); do \
	  sed 's|/opt/rmq-frontdoor|$(PREFIX)|g' systemd/$$u.service > $(DESTDIR)$(UNITDIR)/$$u.service && \
	  chmod 644 $(DESTDIR)$(UNITDIR)/$$u.service || exit 1; \
	done
	install -m 644 examples/node.toml $(DESTDIR)/etc/vrrpd/node.toml.example
	install -m 644 examples/lb.toml $(DESTDIR)/etc/tcplb/lb.toml.example
	@if [ -z "$(DESTDIR)" ] && ! getent passwd tcplb >/dev/null; then \
	  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tcplb; \
	fi
	@if $(SD_RUNNING); then systemctl daemon-reload; else echo "systemd is not running: daemon-reload skipped"; fi

uninstall-systemd:
	@if $(SD_RUNNING); then systemctl disable --now $(addsuffix .service,$(SD_UNITS)) || true; fi
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(addsuffix .service,$(SD_UNITS)))
	@if $(SD_RUNNING); then systemctl daemon-reload; fi
	@if [ -z "$(DESTDIR)" ] && [ -f $(PREFIX)/.rmq-frontdoor ]; then rm -rf $(PREFIX); fi
	@echo "kept: /etc/vrrpd, /etc/tcplb and the tcplb user"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .hypothesis
