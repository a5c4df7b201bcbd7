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
# One object per concern and target architecture (probes/<concern>.<arch>.bpf.o, arch as the kernel names it);
# dmabuf_top.probes.object_path() loads the one for the machine it runs on. Both build on any host: the
# probes use the host's vmlinux.h only for types CO-RE relocates by name, and spell out the few that differ
# by architecture (registers, thread flags) as ___flavour structs in probes/core_defs.h.
BPF_ARCHES := x86 arm64
BPF_CFLAGS := -g -O2 -Wall -Werror -target bpf -I$(BUILD) -Iprobes
BPF_SRCS := $(wildcard probes/*.bpf.c)
BPF_OBJS := $(foreach arch,$(BPF_ARCHES),$(BPF_SRCS:.bpf.c=.$(arch).bpf.o))
BPF_HDRS := $(wildcard probes/*.h)

.PHONY: all bpf deps venv test test-unit test-host test-vm demo clean kernel kernel-arm64

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

define bpf_object_rule
probes/%.$(1).bpf.o: probes/%.bpf.c $$(BPF_HDRS) $$(VMLINUX_H)
	$$(call require,$$(CLANG),clang llvm)
	$$(call require,llvm-strip,llvm)
	$$(CLANG) $$(BPF_CFLAGS) -D__TARGET_ARCH_$(1) -c $$< -o $$@.tmp
	@# DWARF is only for the compiler; libbpf needs .BTF and .BTF.ext, which -g keeps.
	llvm-strip -g $$@.tmp && mv $$@.tmp $$@
endef
$(foreach arch,$(BPF_ARCHES),$(eval $(call bpf_object_rule,$(arch))))

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

# The patched lab kernel (kernel/series, kernel/config/lab.config) from Debian's source of the lab
# kernel's version, built into the cache; instant when nothing changed. Prints the bzImage path.
kernel: venv
	@bash .ci/install-deps kernel
	@$(VENV_PY) -m dmabuf_top.kernel.build

# The arm64 lab kernel: the same source, series and lab.config with kernel/config/lab-arm64.config over it,
# cross-compiled with Debian's aarch64-linux-gnu-gcc; what `dmabuf-top vm --arch arm64` boots once built.
kernel-arm64: venv
	@bash .ci/install-deps kernel-arm64
	@$(VENV_PY) -m dmabuf_top.kernel.build --arch arm64

demo: venv bpf
	@$(VENV_PY) -m dmabuf_top.demo

clean:
	rm -rf $(BUILD) probes/*.bpf.o *.egg-info
