# The two commands of the README contract: `make demo` and `make test`.
# Both install what is missing first (Debian packages, a project venv).
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PKGS := rabbitmq-server keepalived haproxy iproute2 tcpdump iperf3 wrk nginx-light procps curl
STAMP := $(VENV)/.installed

.PHONY: deps apt-deps py-deps demo test test-unit test-netns stress bench lint typecheck clean

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
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

py-deps: $(STAMP)

demo: deps
	$(PY) -m netns.demo

test: deps lint typecheck
	$(PY) -m pytest -q tests

test-unit: py-deps
	$(PY) -m pytest -q tests -m "not netns and not slow"

test-netns: deps
	$(PY) -m pytest -q tests -m netns

stress: deps
	$(PY) -m pytest -q tests/stack -m stress --stress

bench: deps
	$(PY) -m bench all

lint: py-deps
	$(PY) -m ruff check vrrpd tcplb netns bench tests

typecheck: py-deps
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .hypothesis
