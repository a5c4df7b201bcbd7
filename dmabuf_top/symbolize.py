"""User-space addresses -> "function+0xoff (object)", from a process's /proc/PID/maps and the ELF symbols of the
objects mapped there. No dependency beyond the standard library (a minimal ELF64 reader: .symtab, else .dynsym,
and the GNU build-id note).

A frame in an object without symbols reads "object+0xoffset [build-id]", with the offset into the file, so it can
be resolved later against a debug file; an address in no mapping reads "[unknown] 0xADDR". The creator of a buffer
may exit within milliseconds, before its maps are read: the lifecycle probe's user stacks are (build id, file
offset) frames, resolved against every object whose build id the Symbolizer has met (the objects of every maps it
read, and files it was told of: the recorded command's executable), so they need no maps at all.
"""
import bisect
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

ELF_MAGIC = b"\x7fELF"
SHT_SYMTAB, SHT_DYNSYM, SHT_NOTE = 2, 11, 7
PT_LOAD = 1
STT_FUNC = 2
NT_GNU_BUILD_ID = 3
MAX_PROCESSES = 256  # maps remembered; the oldest are forgotten first
MAX_OBJECTS = 128


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int  # file offset of start
    path: str


def read_maps(pid) -> List[Mapping]:
    """The file-backed executable mappings of a process ([] when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        start, end = (int(value, 16) for value in parts[0].split("-"))
        out.append(Mapping(start, end, int(parts[2], 16), parts[5].removesuffix(" (deleted)")))
    return out


class ElfSymbols:
    """Function symbols of one ELF64 little-endian file, found by virtual address (the file's own, p_vaddr)."""

    def __init__(self, path):
        self.path = path
        self.build_id = ""
        self._starts: List[int] = []
        self._symbols: List[Tuple[int, int, str]] = []  # (start, size, name), sorted
        self._loads: List[Tuple[int, int, int]] = []  # PT_LOAD (file offset, vaddr, file size)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            return
        if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:  # ELF64, little-endian only
            return
        try:
            self._parse(data)
        except (struct.error, IndexError, UnicodeDecodeError):
            self._symbols, self._starts = [], []

    def _parse(self, data):
        phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
        for i in range(phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data,
                                                                                     phoff + i * phentsize)
            if p_type == PT_LOAD:
                self._loads.append((p_offset, p_vaddr, p_filesz))
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        tables = {kind: section for section in sections for kind in (section[1],) if kind in (SHT_SYMTAB, SHT_DYNSYM)}
        for section in sections:
            if section[1] == SHT_NOTE:
                self._read_build_id(data[section[4]:section[4] + section[5]])
        table = tables.get(SHT_SYMTAB) or tables.get(SHT_DYNSYM)
        if table is None:
            return
        strings = sections[table[6]]
        str_start = strings[4]
        symbols = {}
        for offset in range(table[4], table[4] + table[5], 24):
            st_name, st_info, _other, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", data, offset)
            if st_info & 0xF != STT_FUNC or not st_value or not st_shndx:
                continue
            end = data.index(b"\0", str_start + st_name)
            symbols.setdefault(st_value, (st_value, st_size, data[str_start + st_name:end].decode("utf-8",
                                                                                               "replace")))
        self._symbols = sorted(symbols.values())
        self._starts = [symbol[0] for symbol in self._symbols]

    def _read_build_id(self, notes):
        position = 0
        while position + 12 <= len(notes):
            namesz, descsz, kind = struct.unpack_from("<III", notes, position)
            name_end = position + 12 + (namesz + 3) // 4 * 4
            if kind == NT_GNU_BUILD_ID and notes[position + 12:position + 12 + namesz] == b"GNU\0":
                self.build_id = notes[name_end:name_end + descsz].hex()
                return
            position = name_end + (descsz + 3) // 4 * 4

    def vaddr_of(self, file_offset) -> Optional[int]:
        for p_offset, p_vaddr, p_filesz in self._loads:
            if p_offset <= file_offset < p_offset + max(p_filesz, 1):
                return p_vaddr + file_offset - p_offset
        return None

    def function_at(self, vaddr) -> Optional[Tuple[str, int]]:
        """(name, offset into it) of the function containing vaddr, or None."""
        index = bisect.bisect_right(self._starts, vaddr) - 1
        if index < 0:
            return None
        start, size, name = self._symbols[index]
        if size and vaddr >= start + size:
            return None
        return name, vaddr - start


class Symbolizer:
    """Symbolizes user stacks of processes whose maps it remembers (read at the first record naming them)."""

    def __init__(self, maps_reader=read_maps):
        self._read_maps = maps_reader
        self._maps: "OrderedDict[int, List[Mapping]]" = OrderedDict()
        self._objects: "OrderedDict[str, ElfSymbols]" = OrderedDict()
        self._by_build_id: Dict[str, str] = {}  # build id -> path of an object that has it

    def remember(self, pid) -> bool:
        """Read pid's maps now unless known; False when they could not be read (the process is gone)."""
        if pid in self._maps:
            self._maps.move_to_end(pid)
            return bool(self._maps[pid])
        maps = self._read_maps(pid)
        if maps:  # an empty read is not kept: a later one may find the process exec'ed
            self._maps[pid] = maps
            for mapping in maps:
                self.learn_file(mapping.path)
            while len(self._maps) > MAX_PROCESSES:
                self._maps.popitem(last=False)
        return bool(maps)

    def forget(self, pid):
        """The process exec'ed or exited: its maps are stale."""
        self._maps.pop(pid, None)

    def _object(self, path) -> ElfSymbols:
        if path not in self._objects:
            self._objects[path] = ElfSymbols(path)
            while len(self._objects) > MAX_OBJECTS:
                self._objects.popitem(last=False)
        return self._objects[path]

    def learn_file(self, path):
        """An object that build-id frames may name (read once)."""
        if path and path not in self._objects:
            symbols = self._object(path)
            if symbols.build_id:
                self._by_build_id.setdefault(symbols.build_id, path)

    def build_id_frame(self, build_id, file_offset) -> str:
        """A (build id, file offset) frame: "function+0xoff (object)", else "object+0xoff [build id]"."""
        path = self._by_build_id.get(build_id)
        if path is None:
            return f"[unknown]+{file_offset:#x} [{build_id}]"
        return self._describe(path, file_offset)

    def _describe(self, path, file_offset):
        symbols = self._object(path)
        vaddr = symbols.vaddr_of(file_offset)
        found = symbols.function_at(vaddr) if vaddr is not None else None
        base = os.path.basename(path)
        if found:
            return f"{found[0]}+{found[1]:#x} ({base})"
        return f"{base}+{file_offset:#x}" + (f" [{symbols.build_id}]" if symbols.build_id else "")

    def frame(self, pid, address) -> str:
        for mapping in self._maps.get(pid, ()):
            if mapping.start <= address < mapping.end:
                return self._describe(mapping.path, address - mapping.start + mapping.offset)
        return f"[unknown] {address:#x}"

    def frames(self, pid, addresses) -> List[str]:
        return [self.frame(pid, address) for address in addresses]

    def user_stack(self, pid, frames) -> List[str]:
        """The lifecycle probe's user frames (.build_id, .offset: probes.buffer_lifecycle.UserFrame) of a stack
        taken in pid: symbolized through pid's objects while it lives, else "object+0xoff [build id]"."""
        if not frames:
            return []
        self.remember(pid)  # its objects' build ids, and raw addresses, while it lives
        return [self.build_id_frame(frame.build_id, frame.offset) if frame.build_id
                else self.frame(pid, frame.offset) for frame in frames]


def cgroup_paths(root="/sys/fs/cgroup") -> Dict[int, str]:
    """{cgroup id: path under the cgroup v2 root}: a cgroup's id is its directory's inode number."""
    paths = {}
    for directory, _subdirs, _files in os.walk(root):
        try:
            paths[os.stat(directory).st_ino] = "/" + os.path.relpath(directory, root).removeprefix(".")
        except OSError:
            continue
    return paths
