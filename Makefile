# Two entry points for a fresh machine with Python 3.11:
#   make demo   install, generate a small ADE20K-layout dataset, train and
#               test a tiny VPT segmentor on the CPU (prints mIoU)
#   make test   install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.mmseg_vpt-installed

DEMO_CONFIG := configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py
DEMO_DATA := data/synthetic_ade20k
DEMO_WORK := work_dirs/demo

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(STAMP): setup.py requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -c "import mmseg_vpt, mmseg, mmpretrain, timm; print('mmseg_vpt', mmseg_vpt.__version__, 'on mmseg', mmseg.__version__)"
	touch $(STAMP)

demo: install
	$(PY) tools/dataset_converters/make_synthetic_ade20k.py $(DEMO_DATA)
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK)
	$(PY) tools/test.py $(DEMO_CONFIG) $$(cat $(DEMO_WORK)/last_checkpoint) --work-dir $(DEMO_WORK)/test

# two test processes (each test file runs whole in one of them, so its
# module fixtures are built once); TEST_PROCS=1 runs them one after another
TEST_PROCS ?= 2

test: install
	$(PY) -m pytest -n $(TEST_PROCS) --dist loadfile

test-fast: install
	$(PY) -m pytest -n $(TEST_PROCS) --dist loadfile -m "not slow"

clean:
	rm -rf $(DEMO_WORK) $(DEMO_DATA)
