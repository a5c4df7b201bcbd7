"""A thin ctypes binding to the system libbpf (libbpf.so.1, libbpf >= 1.0).

Only what dmabuf-top needs: open a CO-RE object, set read-only globals before
load, load with a verifier log we can quote, attach programs by type, use maps,
poll ring buffers, and read iterators. Everything is closed deterministically
through context managers: a half-attached object detaches what it attached.

libbpf 1.x returns NULL + errno from constructors and -errno from the rest;
both become BpfError (or a subclass) here, with the object and program named.
"""
import ctypes
import ctypes.util
import errno as errno_codes
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import BpfError, MissingDependency
from .kernelfs import tracefs_root

log = logging.getLogger("libbpf")

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2
VERIFIER_LOG_SIZE = 1 << 20  # the kernel keeps the log's tail when it overflows (rotating log, 6.4+)
LOG_TAIL_LINES = 12

# enum bpf_map_type values we treat specially
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_RINGBUF = 27
PERCPU_MAP_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}

# BTF kinds (include/uapi/linux/btf.h)
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
BTF_KIND_FUNC = 12
BTF_KIND_STRUCT = 4


class BpfLoadError(BpfError):
    """The kernel (or libbpf) refused to load an object; names the program and quotes the verifier."""

    def __init__(self, object_name, program, err, log_tail, libbpf_lines=()):
        self.object_name = object_name
        self.program = program
        self.errno = err
        self.log_tail = log_tail
        self.libbpf_lines = list(libbpf_lines)
        where = f"program '{program}' in {object_name}" if program else object_name
        message = f"loading {where} failed: {_errno_text(err)}"
        if err == errno_codes.EPERM:
            message += " (run as root, or this kernel forbids this program type)"
        if log_tail:
            message += "; verifier log ends: " + " | ".join(log_tail.splitlines()[-LOG_TAIL_LINES:])
        elif libbpf_lines:
            message += "; libbpf said: " + " | ".join(libbpf_lines[-3:])
        else:
            message += "; verifier log empty"
        super().__init__(message)


class BpfAttachError(BpfError):
    def __init__(self, program, target, err):
        self.program = program
        self.target = target
        self.errno = err
        super().__init__(f"attaching program '{program}' to {target} failed: {_errno_text(err)}")


def _errno_text(err):
    name = errno_codes.errorcode.get(err, str(err))
    return f"{name} ({os.strerror(err)})"


# ---------------------------------------------------------------------------
# Loading the library and declaring the functions we call


class _BpfMapBatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


RingBufferSampleFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
PrintFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_P = ctypes.c_void_p
_SIGNATURES = {
    "bpf_object__open_file": (_P, [ctypes.c_char_p, _P]),
    "bpf_object__load": (ctypes.c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__name": (ctypes.c_char_p, [_P]),
    "bpf_object__btf": (_P, [_P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_program__name": (ctypes.c_char_p, [_P]),
    "bpf_program__section_name": (ctypes.c_char_p, [_P]),
    "bpf_program__set_autoload": (ctypes.c_int, [_P, ctypes.c_bool]),
    "bpf_program__autoload": (ctypes.c_bool, [_P]),
    "bpf_program__set_attach_target": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_char_p]),
    "bpf_program__set_log_buf": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t]),
    "bpf_program__fd": (ctypes.c_int, [_P]),
    "bpf_obj_get_info_by_fd": (ctypes.c_int, [ctypes.c_int, _P, ctypes.POINTER(ctypes.c_uint32)]),
    "bpf_program__attach": (_P, [_P]),
    "bpf_program__attach_tracepoint": (_P, [_P, ctypes.c_char_p, ctypes.c_char_p]),
    "bpf_program__attach_raw_tracepoint": (_P, [_P, ctypes.c_char_p]),
    "bpf_program__attach_trace": (_P, [_P]),
    "bpf_program__attach_kprobe": (_P, [_P, ctypes.c_bool, ctypes.c_char_p]),
    "bpf_program__attach_iter": (_P, [_P, _P]),
    "bpf_link__destroy": (ctypes.c_int, [_P]),
    "bpf_link__fd": (ctypes.c_int, [_P]),
    "bpf_iter_create": (ctypes.c_int, [ctypes.c_int]),
    "bpf_map__name": (ctypes.c_char_p, [_P]),
    "bpf_map__fd": (ctypes.c_int, [_P]),
    "bpf_map__type": (ctypes.c_int, [_P]),
    "bpf_map__key_size": (ctypes.c_uint32, [_P]),
    "bpf_map__value_size": (ctypes.c_uint32, [_P]),
    "bpf_map__max_entries": (ctypes.c_uint32, [_P]),
    "bpf_map__set_max_entries": (ctypes.c_int, [_P, ctypes.c_uint32]),
    "bpf_map__set_value_size": (ctypes.c_int, [_P, ctypes.c_uint32]),
    "bpf_map__reuse_fd": (ctypes.c_int, [_P, ctypes.c_int]),
    "bpf_map__initial_value": (_P, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, _P, _P, ctypes.c_uint64]),
    "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, _P]),
    "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_lookup_and_delete_batch": (
        ctypes.c_int,
        [ctypes.c_int, _P, _P, _P, _P, ctypes.POINTER(ctypes.c_uint32), _P],
    ),
    "bpf_map_lookup_batch": (
        ctypes.c_int,
        [ctypes.c_int, _P, _P, _P, _P, ctypes.POINTER(ctypes.c_uint32), _P],
    ),
    "ring_buffer__new": (_P, [ctypes.c_int, RingBufferSampleFn, _P, _P]),
    "ring_buffer__add": (ctypes.c_int, [_P, ctypes.c_int, RingBufferSampleFn, _P]),
    "ring_buffer__poll": (ctypes.c_int, [_P, ctypes.c_int]),
    "ring_buffer__consume": (ctypes.c_int, [_P]),
    "ring_buffer__free": (None, [_P]),
    "libbpf_set_print": (_P, [PrintFn]),
    "libbpf_num_possible_cpus": (ctypes.c_int, []),
    "btf__load_vmlinux_btf": (_P, []),
    "btf__free": (None, [_P]),
    "btf__parse": (_P, [ctypes.c_char_p, _P]),
    "btf__resolve_size": (ctypes.c_long, [_P, ctypes.c_uint32]),
    "btf__find_by_name_kind": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_uint32]),
    "btf__type_by_id": (_P, [_P, ctypes.c_uint32]),
    "btf__name_by_offset": (ctypes.c_char_p, [_P, ctypes.c_uint32]),
    "libbpf_major_version": (ctypes.c_uint32, []),
    "libbpf_minor_version": (ctypes.c_uint32, []),
}

_lib = None
_print_callback = None  # kept alive for as long as libbpf may call it


def libbpf(library_name=None):
    """The loaded libbpf, with our log routing installed. Raises MissingDependency if absent."""
    global _lib, _print_callback
    if _lib is not None and library_name is None:
        return _lib
    name = library_name or os.environ.get("DMABUF_TOP_LIBBPF") or ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise MissingDependency(
            f"the libbpf shared library ({name}) could not be loaded: "
            "install it with 'apt-get install libbpf1' (libbpf >= 1.0)"
        ) from None
    missing = [symbol for symbol in _SIGNATURES if not hasattr(lib, symbol)]
    if missing:
        raise MissingDependency(
            f"{name} is too old (lacks {missing[0]}): dmabuf-top needs libbpf >= 1.0 ('apt-get install libbpf1')"
        )
    for symbol, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, symbol)
        function.restype = restype
        function.argtypes = argtypes
    if library_name is not None:
        return lib
    _print_callback = PrintFn(_route_libbpf_print)
    lib.libbpf_set_print(_print_callback)
    _lib = lib
    return lib


def libbpf_version():
    lib = libbpf()
    return f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}"


_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int
_libbpf_lines = []  # lines libbpf printed during the current load; quoted when the load fails


def _route_libbpf_print(level, fmt, args):
    # va_list can be consumed once only, so format into a buffer big enough for libbpf's longest lines.
    buffer = ctypes.create_string_buffer(8192)
    _libc.vsnprintf(buffer, len(buffer), fmt, args)
    for line in buffer.value.decode("utf-8", "replace").splitlines():
        if level == LIBBPF_WARN:
            _libbpf_lines.append(line.removeprefix("libbpf: "))
            log.info("%s", line)
        else:
            log.debug("%s", line)
    return 0


def _ensure_tracefs():
    """libbpf finds a tracepoint's id (and a legacy kprobe's) in tracefs; a freshly booted machine may
    have none mounted, and libbpf then answers ENOENT as if the event did not exist."""
    tracefs_root(mount_if_missing=True)


def _check(result, what):
    """libbpf 1.x: int functions return -errno on failure."""
    if result < 0:
        raise BpfError(f"{what} failed: {_errno_text(-result)}")
    return result


def _errno():
    return ctypes.get_errno() or errno_codes.EINVAL


# ---------------------------------------------------------------------------
# Objects, programs and links


class BpfObject:
    """One opened (and later loaded) .bpf.o. Use as a context manager, or call close()."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise BpfError(
                f"BPF object {self.path} is missing: build it with 'make bpf' (needs clang and bpftool)"
            )
        self._lib = libbpf()
        ctypes.set_errno(0)
        self._obj = self._lib.bpf_object__open_file(os.fsencode(self.path), None)
        if not self._obj:
            raise BpfError(f"libbpf could not open {self.path}: {_errno_text(_errno())}")
        self.name = self._lib.bpf_object__name(self._obj).decode()
        self._links = []
        self._loaded = False
        self.programs = {}
        program = self._lib.bpf_object__next_program(self._obj, None)
        while program:
            wrapped = Program(self, program)
            self.programs[wrapped.name] = wrapped
            program = self._lib.bpf_object__next_program(self._obj, program)
        self.maps = {}
        bpf_map = self._lib.bpf_object__next_map(self._obj, None)
        while bpf_map:
            wrapped = Map(self, bpf_map)
            self.maps[wrapped.name] = wrapped
            bpf_map = self._lib.bpf_object__next_map(self._obj, bpf_map)

    # -- before load

    def program(self, name):
        try:
            return self.programs[name]
        except KeyError:
            raise BpfError(f"{self.path.name} has no program '{name}' (it has: {', '.join(self.programs)})") from None

    def map(self, name):
        try:
            return self.maps[name]
        except KeyError:
            raise BpfError(f"{self.path.name} has no map '{name}' (it has: {', '.join(self.maps)})") from None

    def only(self, *program_names):
        """Load only these programs (others keep their code but are not loaded): one object, many variants."""
        for name in program_names:
            self.program(name)
        for program in self.programs.values():
            program.autoload = program.name in program_names
        return self

    def set_rodata(self, **values):
        """Set `const volatile` globals before load; values are ints, bools or bytes."""
        if self._loaded:
            raise BpfError(f"{self.name}: read-only globals can only be set before load")
        layout = self._rodata_layout()
        rodata = next((m for m in self.maps.values() if m.name.endswith(".rodata")), None)
        if rodata is None:
            raise BpfError(f"{self.name} has no read-only globals (no .rodata section)")
        size = ctypes.c_size_t()
        base = self._lib.bpf_map__initial_value(rodata._map, ctypes.byref(size))
        for name, value in values.items():
            if name not in layout:
                raise BpfError(f"{self.name} has no read-only global '{name}' (it has: {', '.join(layout)})")
            offset, width = layout[name]
            if isinstance(value, (bytes, bytearray)):
                raw = bytes(value).ljust(width, b"\0")
                if len(raw) > width:
                    raise BpfError(f"value for '{name}' is {len(value)} bytes; the global holds {width}")
            else:
                raw = int(value).to_bytes(width, "little", signed=int(value) < 0)
            ctypes.memmove(base + offset, raw, width)
        return self

    def _rodata_layout(self):
        return self.datasec_layout(".rodata")

    def datasec_layout(self, section):
        """{variable name: (offset, size)} of a global data section ('.rodata', '.bss', '.data') from the
        object's own BTF DATASEC."""
        btf = self._lib.bpf_object__btf(self._obj)
        if not btf:
            return {}
        section_id = self._lib.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
        if section_id < 0:
            return {}
        section = self._lib.btf__type_by_id(btf, section_id)
        header = (ctypes.c_uint32 * 3).from_address(section)  # name_off, info, size
        entries = header[1] & 0xFFFF
        secinfo = (ctypes.c_uint32 * (3 * entries)).from_address(section + 12)  # type, offset, size
        layout = {}
        for index in range(entries):
            var_type, offset, size = secinfo[3 * index : 3 * index + 3]
            var = (ctypes.c_uint32 * 3).from_address(self._lib.btf__type_by_id(btf, var_type))
            layout[self._lib.btf__name_by_offset(btf, var[0]).decode()] = (offset, size)
        return layout

    # -- load

    def load(self):
        log_buffer = ctypes.create_string_buffer(VERIFIER_LOG_SIZE)
        self._log_buffer = log_buffer  # libbpf keeps the pointer until close
        for program in self.programs.values():
            self._lib.bpf_program__set_log_buf(program._prog, log_buffer, VERIFIER_LOG_SIZE)
        del _libbpf_lines[:]
        result = self._lib.bpf_object__load(self._obj)
        if result < 0:
            failed = self._first_failed_program()
            raise BpfLoadError(
                self.path.name,
                failed,
                -result,
                log_buffer.value.decode("utf-8", "replace").strip(),
                _libbpf_lines,
            )
        self._loaded = True
        return self

    def _first_failed_program(self):
        # libbpf loads programs in object order and stops at the first failure.
        for program in self.programs.values():
            if program.autoload and program.fd < 0:
                return program.name
        return None

    # -- lifetime

    def detach_all(self):
        """Destroy every link; the programs stay loaded and can be attached again."""
        for link in reversed(self._links):
            link.destroy()
        self._links.clear()

    def close(self):
        self.detach_all()
        if self._obj:
            self._lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_obj", None):
            self.close()


class Link:
    def __init__(self, lib, link, description):
        self._lib = lib
        self._link = link
        self.description = description

    @property
    def fd(self):
        return self._lib.bpf_link__fd(self._link)

    def destroy(self):
        if self._link:
            self._lib.bpf_link__destroy(self._link)
            self._link = None


class Program:
    def __init__(self, obj, prog):
        self._obj = obj
        self._lib = obj._lib
        self._prog = prog
        self.name = self._lib.bpf_program__name(prog).decode()
        self.section = self._lib.bpf_program__section_name(prog).decode()

    @property
    def autoload(self):
        return bool(self._lib.bpf_program__autoload(self._prog))

    @autoload.setter
    def autoload(self, enabled):
        _check(self._lib.bpf_program__set_autoload(self._prog, enabled), f"set_autoload({self.name})")

    @property
    def fd(self):
        return self._lib.bpf_program__fd(self._prog)

    # struct bpf_prog_info (include/uapi/linux/bpf.h): its size since 5.16, and where its run statistics are:
    # run_time_ns and run_cnt (5.1+; counted only while kernel.bpf_stats_enabled is 1), recursion_misses (5.12+).
    _PROG_INFO_SIZE = 232
    _INFO_U64_AT = {"run_time_ns": 192, "run_cnt": 200, "recursion_misses": 208}

    def info_counters(self):
        """{"run_time_ns", "run_cnt", "recursion_misses": int or None (None: this kernel's info ends before it)}."""
        info = ctypes.create_string_buffer(self._PROG_INFO_SIZE)
        size = ctypes.c_uint32(self._PROG_INFO_SIZE)
        _check(self._lib.bpf_obj_get_info_by_fd(self.fd, info, ctypes.byref(size)), f"prog info of {self.name}")
        return {name: int.from_bytes(info.raw[at:at + 8], "little") if size.value >= at + 8 else None
                for name, at in self._INFO_U64_AT.items()}

    @property
    def recursion_misses(self):
        """Times the kernel skipped this program because it was already running on that CPU (a tracepoint hit
        again from an interrupt while the program ran): events it never saw. None where the kernel does not say."""
        return self.info_counters()["recursion_misses"]

    def set_attach_target(self, function_name):
        """Retarget an fentry/fexit/tp_btf program before load (one program, many kernel functions)."""
        _check(
            self._lib.bpf_program__set_attach_target(self._prog, 0, function_name.encode()),
            f"set_attach_target({self.name}, {function_name})",
        )

    def _attach(self, link, target):
        if not link:
            raise BpfAttachError(self.name, target, _errno())
        wrapped = Link(self._lib, link, f"{self.name} -> {target}")
        self._obj._links.append(wrapped)
        return wrapped

    def attach(self):
        """Attach as the section name says (SEC("tp/..."), SEC("fentry/..."), SEC("kprobe/...") ...)."""
        if self.section.startswith(("tp/", "tracepoint/", "kprobe/", "kretprobe/")):
            _ensure_tracefs()
        ctypes.set_errno(0)
        return self._attach(self._lib.bpf_program__attach(self._prog), self.section)

    def attach_tracepoint(self, category, name):
        _ensure_tracefs()
        ctypes.set_errno(0)
        link = self._lib.bpf_program__attach_tracepoint(self._prog, category.encode(), name.encode())
        return self._attach(link, f"tracepoint {category}:{name}")

    def attach_raw_tracepoint(self, name):
        ctypes.set_errno(0)
        return self._attach(self._lib.bpf_program__attach_raw_tracepoint(self._prog, name.encode()), f"raw_tp {name}")

    def attach_trace(self):
        """fentry/fexit/fmod_ret/tp_btf: the target was fixed at load."""
        ctypes.set_errno(0)
        return self._attach(self._lib.bpf_program__attach_trace(self._prog), self.section)

    def attach_kprobe(self, function_name, retprobe=False):
        _ensure_tracefs()
        ctypes.set_errno(0)
        link = self._lib.bpf_program__attach_kprobe(self._prog, retprobe, function_name.encode())
        return self._attach(link, f"{'kretprobe' if retprobe else 'kprobe'} {function_name}")

    def attach_iter(self):
        ctypes.set_errno(0)
        return self._attach(self._lib.bpf_program__attach_iter(self._prog, None), self.section)

    def read_iter(self, link=None, chunk=1 << 16):
        """Run an iterator program once and return everything it wrote."""
        link = link or self.attach_iter()
        fd = self._lib.bpf_iter_create(link.fd)
        if fd < 0:
            raise BpfError(f"creating an iterator for '{self.name}' failed: {_errno_text(-fd)}")
        parts = []
        try:
            while True:
                part = os.read(fd, chunk)
                if not part:
                    break
                parts.append(part)
        finally:
            os.close(fd)
        return b"".join(parts)


# ---------------------------------------------------------------------------
# Maps


class Map:
    def __init__(self, obj, bpf_map):
        self._obj = obj
        self._lib = obj._lib
        self._map = bpf_map
        self.name = self._lib.bpf_map__name(bpf_map).decode()

    @property
    def fd(self):
        return self._lib.bpf_map__fd(self._map)

    @property
    def type(self):
        return self._lib.bpf_map__type(self._map)

    @property
    def key_size(self):
        return self._lib.bpf_map__key_size(self._map)

    @property
    def value_size(self):
        return self._lib.bpf_map__value_size(self._map)

    @value_size.setter
    def value_size(self, size):
        """Before load. A stack map's value size is its depth: bpf_get_stackid keeps the innermost frames."""
        _check(self._lib.bpf_map__set_value_size(self._map, size), f"set_value_size({self.name})")

    @property
    def max_entries(self):
        return self._lib.bpf_map__max_entries(self._map)

    @max_entries.setter
    def max_entries(self, count):
        _check(self._lib.bpf_map__set_max_entries(self._map, count), f"set_max_entries({self.name})")

    def reuse_fd(self, fd):
        """Before load: use an existing map (another object's, by its fd) instead of creating this one."""
        _check(self._lib.bpf_map__reuse_fd(self._map, fd), f"reuse_fd({self.name})")

    @property
    def is_percpu(self):
        return self.type in PERCPU_MAP_TYPES

    def _value_buffer_size(self):
        # Per-CPU values come back as one slot per possible CPU, each rounded up to 8 bytes.
        if self.is_percpu:
            return ((self.value_size + 7) // 8 * 8) * self._lib.libbpf_num_possible_cpus()
        return self.value_size

    def split_percpu(self, raw):
        """Per-CPU value bytes -> list of per-CPU value bytes."""
        stride = (self.value_size + 7) // 8 * 8
        return [raw[i : i + self.value_size] for i in range(0, len(raw), stride)]

    def _key(self, key):
        key = bytes(key)
        if len(key) != self.key_size:
            raise BpfError(f"map {self.name}: key is {len(key)} bytes, the map's are {self.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def lookup(self, key):
        """Value bytes for key, or None."""
        value = ctypes.create_string_buffer(self._value_buffer_size())
        if self._lib.bpf_map_lookup_elem(self.fd, self._key(key), value) < 0:
            return None
        return value.raw

    def update(self, key, value, flags=0):
        value = bytes(value)
        _check(
            self._lib.bpf_map_update_elem(self.fd, self._key(key), ctypes.create_string_buffer(value, len(value)),
                                          flags),
            f"update of map {self.name}",
        )

    def delete(self, key):
        return self._lib.bpf_map_delete_elem(self.fd, self._key(key)) == 0

    def keys(self):
        previous = None
        next_key = ctypes.create_string_buffer(self.key_size)
        while self._lib.bpf_map_get_next_key(self.fd, previous, next_key) == 0:
            yield next_key.raw
            previous = ctypes.create_string_buffer(next_key.raw, self.key_size)

    def items(self):
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:  # deleted between the walk and the lookup
                yield key, value

    def pop_all(self, batch=256):
        """Read and delete every entry in one pass per batch (lookup_and_delete_batch).

        Reading all then deleting all loses what the kernel adds in between; the batch
        call does both per entry. Falls back to per-key lookup+delete where a kernel or
        map type lacks it.
        """
        result = self._walk_batches(self._lib.bpf_map_lookup_and_delete_batch, batch, "draining")
        return self._pop_all_by_key() if result is None else result

    def lookup_all(self, batch=1024):
        """[(key, value)] of every entry, a batch per bpf() call (lookup_batch) where items() makes
        two per entry: the difference is seconds for thousands of entries on a slow machine.
        Falls back to items() where a kernel or map type lacks the batch call."""
        result = self._walk_batches(self._lib.bpf_map_lookup_batch, batch, "reading")
        return list(self.items()) if result is None else result

    def _walk_batches(self, function, batch, what):
        """Every (key, value) through a batch call; None when the call is not supported here."""
        keys = ctypes.create_string_buffer(self.key_size * batch)
        value_size = self._value_buffer_size()
        values = ctypes.create_string_buffer(value_size * batch)
        in_batch = None
        out_batch = ctypes.create_string_buffer(max(self.key_size, 8))
        opts = _BpfMapBatchOpts(ctypes.sizeof(_BpfMapBatchOpts), 0, 0)
        result = []
        while True:
            count = ctypes.c_uint32(batch)
            rc = function(self.fd, in_batch, out_batch, keys, values, ctypes.byref(count), ctypes.byref(opts))
            got = count.value
            key_bytes, value_bytes = keys.raw[: got * self.key_size], values.raw[: got * value_size]
            for i in range(got):
                result.append((key_bytes[i * self.key_size : (i + 1) * self.key_size],
                               value_bytes[i * value_size : (i + 1) * value_size]))
            if rc < 0:
                if -rc == errno_codes.ENOENT:  # walked to the end
                    return result
                if -rc in (errno_codes.EINVAL, errno_codes.ENOTSUP, errno_codes.EOPNOTSUPP) and not result:
                    return None
                raise BpfError(f"{what} map {self.name} failed: {_errno_text(-rc)}")
            in_batch = ctypes.create_string_buffer(out_batch.raw, len(out_batch))

    def _pop_all_by_key(self):
        result = []
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None and self.delete(key):
                result.append((key, value))
        return result


class RingBuffer:
    """Polls one BPF ring buffer map (or several: add()) into Python callbacks taking the record's bytes."""

    def __init__(self, bpf_map, callback):
        if bpf_map.type != BPF_MAP_TYPE_RINGBUF:
            raise BpfError(f"map {bpf_map.name} is not a ring buffer")
        self._lib = bpf_map._lib
        self._callback = callback
        self._error = None
        self._limit = None
        self._taken = 0
        self._sample_fn = RingBufferSampleFn(self._on_sample)  # kept alive while libbpf holds it
        self._more = []  # (map, callback, sample fn) of add(): kept alive too
        ctypes.set_errno(0)
        self._rb = self._lib.ring_buffer__new(bpf_map.fd, self._sample_fn, None, None)
        if not self._rb:
            raise BpfError(f"creating a ring buffer reader for {bpf_map.name} failed: {_errno_text(_errno())}")

    def add(self, bpf_map, callback):
        """Also poll this ring buffer map, into its own callback (one poll waits on both)."""
        if bpf_map.type != BPF_MAP_TYPE_RINGBUF:
            raise BpfError(f"map {bpf_map.name} is not a ring buffer")
        sample_fn = RingBufferSampleFn(lambda ctx, data, size: self._on_sample(ctx, data, size, callback))
        self._more.append((bpf_map, callback, sample_fn))
        _check(self._lib.ring_buffer__add(self._rb, bpf_map.fd, sample_fn, None), f"ring_buffer__add({bpf_map.name})")

    def _on_sample(self, _ctx, data, size, callback=None):
        try:
            (callback or self._callback)(ctypes.string_at(data, size))
        except BaseException as error:  # noqa: BLE001 - re-raised from poll(), not across C frames
            self._error = error
            return -1
        self._taken += 1
        # libbpf 1.1 keeps consuming while the producers keep writing (no consume_n before 1.3):
        # a negative return is its only stop, after this record (which stays consumed).
        return -1 if self._limit is not None and self._taken >= self._limit else 0

    def _run(self, call, limit):
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit, self._taken = limit, 0
        try:
            result = call()
        finally:
            self._limit = None
        self._raise_pending()
        if limit is not None and self._taken >= limit:
            return self._taken  # stopped by _on_sample, not a failure
        if result < 0 and result != -errno_codes.EINTR:
            raise BpfError(f"polling the ring buffer failed: {_errno_text(-result)}")
        return max(result, 0)

    def poll(self, timeout_ms=100, limit=None):
        """Wait for records and hand each to the callback; returns how many were consumed.

        limit: stop after that many, even while producers keep writing (else a reader slower
        than the producers never returns, and whatever its callback keeps grows without bound)."""
        return self._run(lambda: self._lib.ring_buffer__poll(self._rb, timeout_ms), limit)

    def consume(self, limit=None):
        """Every record available now (at most limit), without waiting."""
        return self._run(lambda: self._lib.ring_buffer__consume(self._rb), limit)

    def _raise_pending(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self):
        if self._rb:
            self._lib.ring_buffer__free(self._rb)
            self._rb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# Kernel BTF


class KernelBtf:
    """The running kernel's BTF: does a function or type exist here?"""

    def __init__(self):
        self._lib = libbpf()
        ctypes.set_errno(0)
        self._btf = self._lib.btf__load_vmlinux_btf()
        if not self._btf:
            raise BpfError(
                f"the kernel's BTF could not be read ({_errno_text(_errno())}): "
                "dmabuf-top needs CONFIG_DEBUG_INFO_BTF=y"
            )

    def has_function(self, name):
        return self._lib.btf__find_by_name_kind(self._btf, name.encode(), BTF_KIND_FUNC) > 0

    def has_struct(self, name):
        return self._lib.btf__find_by_name_kind(self._btf, name.encode(), BTF_KIND_STRUCT) > 0

    def close(self):
        if self._btf:
            self._lib.btf__free(self._btf)
            self._btf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def struct_size_in_object(path, struct_name):
    """sizeof(struct struct_name) as compiled into a .bpf.o (from its BTF), or None if absent.

    Lets tests prove that a ctypes mirror and the C struct it mirrors agree.
    """
    lib = libbpf()
    ctypes.set_errno(0)
    btf = lib.btf__parse(os.fsencode(path), None)
    if not btf:
        raise BpfError(f"reading BTF from {path} failed: {_errno_text(_errno())}")
    try:
        type_id = lib.btf__find_by_name_kind(btf, struct_name.encode(), BTF_KIND_STRUCT)
        return None if type_id < 0 else lib.btf__resolve_size(btf, type_id)
    finally:
        lib.btf__free(btf)


@contextmanager
def open_object(path, rodata=None, only=None):
    """Open, configure and load an object; closed (links destroyed) when the block ends."""
    obj = BpfObject(path)
    try:
        if only:
            obj.only(*only)
        if rodata:
            obj.set_rodata(**rodata)
        obj.load()
        yield obj
    finally:
        obj.close()
