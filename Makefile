# The two commands of the README: `make up` (set up and run the stack) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup up down status test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# socket.io-client 4.x for the Socket.IO tests (tests/socketio_client), pinned by its lock file.
SOCKETIO_CLIENT := tests/socketio_client
$(SOCKETIO_CLIENT)/node_modules/.package-lock.json: $(SOCKETIO_CLIENT)/package-lock.json
	cd $(SOCKETIO_CLIENT) && npm ci --no-audit --no-fund --loglevel=error

# The page's player: hls.js from the npm registry (package-lock.json), copied into the static folder.
HLS_JS := producers/static/vendor/hls.min.js

$(HLS_JS): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $@)
	cp node_modules/hls.js/dist/hls.min.js $@

# The browser of the page's test (Debian's chromium, driven by Playwright); only when it is missing.
/usr/bin/chromium:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

setup: $(BIN)/.installed $(SOCKETIO_CLIENT)/node_modules/.package-lock.json $(HLS_JS) /usr/bin/chromium
	$(BIN)/lustrax setup

up: setup
	$(BIN)/lustrax up

down:
	$(BIN)/lustrax down

status:
	$(BIN)/lustrax status

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .lustrax node_modules $(dir $(HLS_JS)) $(SOCKETIO_CLIENT)/node_modules
