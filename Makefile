# dmabuf-top: `make` builds the BPF objects; `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
BUILD := build
VMLINUX_BTF ?= /sys/kernel/btf/vmlinux
VMLINUX_H := $(BUILD)/vmlinux.h
CLANG ?= clang
BPFTOOL ?= bpftool
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
BPF_CFLAGS := -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) -I$(BUILD) -Iprobes
BPF_SRCS := $(wildcard probes/*.bpf.c)
BPF_OBJS := $(BPF_SRCS:.bpf.c=.bpf.o)
BPF_HDRS := $(wildcard probes/*.h)

.PHONY: all bpf deps venv test test-unit test-host test-vm demo clean kernel

all: bpf

bpf: $(BPF_OBJS)

define require
	@command -v $(1) >/dev/null 2>&1 || { echo "dmabuf-top build: '$(1)' not found: install it with 'apt-get install $(2)' (or run 'make deps' as root)" >&2; exit 1; }
endef

$(VMLINUX_H):
	$(call require,$(BPFTOOL),bpftool)
	@test -r $(VMLINUX_BTF) || { echo "dmabuf-top build: $(VMLINUX_BTF) is not readable: build on a kernel with CONFIG_DEBUG_INFO_BTF=y, or set VMLINUX_BTF=<path to a BTF file>" >&2; exit 1; }
	@mkdir -p $(BUILD)
	$(BPFTOOL) btf dump file $(VMLINUX_BTF) format c > $@.tmp && mv $@.tmp $@

probes/%.bpf.o: probes/%.bpf.c $(BPF_HDRS) $(VMLINUX_H)
	$(call require,$(CLANG),clang llvm)
	$(call require,llvm-strip,llvm)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@.tmp
	@# DWARF is only for the compiler; libbpf needs .BTF and .BTF.ext, which -g keeps.
	llvm-strip -g $@.tmp && mv $@.tmp $@

# System packages (Debian names) and the Python environment; idempotent, so the README's commands can always run it.
deps:
	@bash .ci/install-deps

venv: deps $(VENV)/.installed

# Reinstalled only when the packaging changes; pip's chatter goes to a log shown on failure.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	@echo "dmabuf-top: installing into $(VENV) (log: $(VENV)/pip.log)"
	@{ $(VENV_PY) -m pip install --upgrade pip && $(VENV_PY) -m pip install -e '.[test]'; } > $(VENV)/pip.log 2>&1 \
		|| { tail -n 30 $(VENV)/pip.log; echo "dmabuf-top: pip install failed (full log: $(VENV)/pip.log)" >&2; exit 1; }
	@touch $@

test: venv bpf
	@bash .ci/test-all

# The patched lab kernel (kernel/patches, kernel/config/lab.config) from Debian's source of the lab
# kernel's version, built into the cache; instant when nothing changed. Prints the bzImage path.
kernel: venv
	@bash .ci/install-deps kernel
	@$(VENV_PY) -m dmabuf_top.kernel.build

demo: venv bpf
	@$(VENV_PY) -m dmabuf_top.demo

clean:
	rm -rf $(BUILD) probes/*.bpf.o *.egg-info
