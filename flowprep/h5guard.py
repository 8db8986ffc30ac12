"""Checks of an HDF5 file's own structures, made before the HDF5 library reads them from an untrusted file.

The HDF5 library trusts what a file says about itself. Fuzzing store files (``tests/fuzz_harness.py``) found
two ways a damaged or crafted video file makes it hang or allocate gigabytes, with HDF5 2.0.0 (h5py 3.16):

* A global heap collection (where variable-length data lives: our strings and JPEGs) whose object headers
  were zeroed: the library walks a collection's objects by their sizes, and a free-space object of size 0
  never moves the walk on (an endless loop, reached by reading a string attribute such as ``sha256``).
* A variable-length item whose entry declares a length of gigabytes: the library allocates that length,
  per item, before it reads the item.

So flowprep never lets the library read variable-length data it has not checked: the items of the ``rgb`` and
``flow_x``/``flow_y`` datasets are read by :class:`flowprep.store._HeapReader`, which checks every offset and size
itself; and string attributes are read only after :func:`attribute_table` and :func:`check_attribute` have
checked, from the file's bytes, the attribute messages of the root group (sizes within the message, types
flowprep writes) and the heap collection each string lies in (a walk of its object headers as the library will
walk them: no step of size 0 or past the collection's end; the string's object there, of the string's length).

This reads the file's layout as the HDF5 File Format Specification 3.0 describes it, for the layout flowprep's
files have (what h5py writes by default): superblock version 0 or 1 with 8-byte addresses and lengths at the
start of the file, version 1 object headers. Anything else is refused as a layout flowprep never writes.
Cost: a few small reads per file (the superblock and the root group's object header blocks), then one read of
each heap collection walked (the library reads all of it to read one string anyway) and a step per object.
"""
from __future__ import annotations

import os
import struct
import weakref

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAX_MESSAGES = 4096  # attribute and other messages in the root group's object header: flowprep writes ~20
_MAX_BLOCKS = 64  # object header blocks (the first and its continuations)
_MAX_STRING = 1 << 20  # bytes of one string attribute: flowprep's longest, the settings JSON, is ~2 KB
_VLEN, _COMPOUND, _ARRAY, _REFERENCE = 9, 6, 10, 7
HEAP_OBJECT = struct.Struct("<HHIQ")  # a global heap object's header: index, reference count, reserved, size


class LayoutError(ValueError):
    """A file's structures are damaged or not those flowprep writes; the message says which (without the path)."""


class _File:
    """Bounded ``pread``s of one open file."""

    def __init__(self, fd: int):
        self.fd, self.size = fd, os.fstat(fd).st_size

    def read(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise LayoutError(f"{what} at byte {offset} lies past the end of the file ({self.size} bytes)")
        buf = os.pread(self.fd, size, offset)
        if len(buf) != size:
            raise LayoutError(f"short read of {what} at byte {offset}")
        return buf


def superblock(fd: int) -> tuple[int, int]:
    """(base address, root group's object header address) of an open HDF5 file, from its version 0/1 superblock.

    The superblock is at byte 0, or after a user block at byte 512, 1024, 2048, ... (where the library looks);
    every address in the file is relative to where it is found (the base address). Raises :class:`LayoutError`
    for anything else.
    """
    f = _File(fd)
    base = 0
    while True:
        if base + 96 > f.size:
            raise LayoutError("no HDF5 superblock")
        sb = f.read(base, 96, "the superblock")
        if sb[:8] == _SIGNATURE:
            break
        base = 512 if base == 0 else base * 2
    version = sb[8]
    if version not in (0, 1):
        raise LayoutError(f"superblock version {version}, which flowprep never writes")
    if (sb[13], sb[14]) != (8, 8):
        raise LayoutError(f"{sb[13]}-byte addresses and {sb[14]}-byte lengths, which flowprep never writes")
    entry = 56 if version == 0 else 60  # the root group's symbol table entry: link name offset, header address
    return base, base + struct.unpack_from("<Q", sb, entry + 8)[0]


def _messages(f: _File, address: int, base: int):
    """(type, flags, body) of each message of the version 1 object header at file offset ``address``, continuation
    blocks (at ``base`` + their address) followed."""
    head = f.read(address, 16, "the root group's object header")
    if head[0] != 1:
        raise LayoutError(f"object header version {head[0]}, which flowprep never writes")
    blocks, seen, count = [(address + 16, struct.unpack_from("<I", head, 8)[0])], set(), 0
    while blocks:
        start, length = blocks.pop(0)
        if (start, length) in seen:
            raise LayoutError(f"an object header block at byte {start} is linked twice")
        seen.add((start, length))
        if len(seen) > _MAX_BLOCKS:
            raise LayoutError(f"the root group's object header has over {_MAX_BLOCKS} blocks")
        block = f.read(start, length, "an object header block")
        pos = 0
        while pos + 8 <= length:
            kind, size, flags = struct.unpack_from("<HHB", block, pos)
            if pos + 8 + size > length:
                raise LayoutError(f"a header message at byte {start + pos} runs past its block")
            count += 1
            if count > _MAX_MESSAGES:
                raise LayoutError(f"the root group's object header has over {_MAX_MESSAGES} messages")
            body = block[pos + 8:pos + 8 + size]
            if kind == 0x10:  # continuation: where the next block lies
                if size < 16:
                    raise LayoutError(f"a continuation message at byte {start + pos} is too short")
                next_at, next_length = struct.unpack_from("<QQ", body)
                blocks.append((base + next_at, next_length))
            else:
                yield kind, flags, body
            pos += 8 + size


def _datatype(body: bytes, pos: int, end: int) -> tuple[int, int, tuple[int, int]]:
    """(class, element size, (class, size) of a variable-length type's base type) of a datatype message."""
    if pos + 8 > end:
        raise LayoutError("a truncated datatype")
    cls, size = body[pos] & 0x0F, struct.unpack_from("<I", body, pos + 4)[0]
    base = (-1, 0)
    if cls == _VLEN:
        if pos + 16 > end:
            raise LayoutError("a truncated variable-length datatype")
        base = body[pos + 8] & 0x0F, struct.unpack_from("<I", body, pos + 12)[0]
    return cls, size, base


def _elements(body: bytes, pos: int, end: int) -> int:
    """Number of elements a dataspace message (version 1 or 2) describes."""
    if pos + 4 > end:
        raise LayoutError("a truncated dataspace")
    version, rank = body[pos], body[pos + 1]
    if version == 1:
        dims_at = pos + 8
    elif version == 2:
        if body[pos + 3] == 2:  # the null dataspace: no elements
            return 0
        dims_at = pos + 4
    else:
        raise LayoutError(f"dataspace version {version}")
    if rank > 32 or dims_at + 8 * rank > end:
        raise LayoutError("a truncated dataspace")
    n = 1
    for d in struct.unpack_from(f"<{rank}Q", body, dims_at):
        n *= d
    return n


def _attribute(body: bytes, flags: int) -> tuple[str, list[tuple[int, int, int]]]:
    """(name, [(length, heap collection address, object index)] of its strings) of an attribute message,
    whose declared sizes are checked against the message's own size."""
    if flags & 0x02:
        raise LayoutError("a shared attribute message, which flowprep never writes")
    if len(body) < 8:
        raise LayoutError("a truncated attribute message")
    version = body[0]
    name_size, type_size, space_size = struct.unpack_from("<HHH", body, 2)
    if version == 1:
        pad = lambda n: (n + 7) // 8 * 8  # noqa: E731 (version 1 pads each part to 8 bytes)
        pos = 8
    elif version in (2, 3):
        if body[1] & 0x03:
            raise LayoutError("an attribute with a shared datatype or dataspace, which flowprep never writes")
        pad = lambda n: n  # noqa: E731
        pos = 8 if version == 2 else 9
    else:
        raise LayoutError(f"attribute message version {version}")
    end = len(body)
    if pos + pad(name_size) + pad(type_size) + pad(space_size) > end or name_size < 1:
        raise LayoutError("an attribute message whose parts run past its end")
    name = body[pos:pos + name_size - 1].decode("utf-8", "replace")
    pos += pad(name_size)
    cls, size, base = _datatype(body, pos, pos + type_size)
    pos += pad(type_size)
    n = _elements(body, pos, pos + space_size)
    pos += pad(space_size)
    if cls in (_COMPOUND, _ARRAY, _REFERENCE):
        raise LayoutError(f"attribute {name!r} of a compound, array or reference type, which flowprep never writes")
    if pos + n * size > end:
        raise LayoutError(f"attribute {name!r} declares {n} elements of {size} bytes, more than its message holds")
    if cls != _VLEN:
        return name, []
    if size != 16 or base[1] != 1:
        raise LayoutError(f"attribute {name!r} of a variable-length type flowprep never writes")
    return name, [struct.unpack_from("<IQI", body, pos + 16 * i) for i in range(n)]


class AttributeTable:
    """The string attributes of a file's root group: where each string lies, from the file's own bytes.

    Built by :func:`attribute_table`, which also checks every attribute message; :meth:`check` checks the heap
    collection of one attribute's strings before the library reads it.
    """

    def __init__(self, fd: int):
        self._file = _File(fd)
        self.base, root = superblock(fd)
        self.strings: dict[str, list[tuple[int, int, int]]] = {}
        for kind, flags, body in _messages(self._file, root, self.base):
            if kind == 0x0C:
                name, heap_ids = _attribute(body, flags)
                self.strings[name] = heap_ids
            elif kind == 0x15 or kind == 0x17:  # attribute info (dense storage), shared message table
                raise LayoutError("attributes in dense storage, which flowprep never writes")
        self._collections: dict[int, dict[int, int]] = {}  # address -> {object index: size}

    def check(self, name: str) -> None:
        """Raise :class:`LayoutError` unless each string of attribute ``name`` lies in a sound heap collection,
        an object there of the string's length (nothing to check for other attributes)."""
        for length, address, index in self.strings.get(name, ()):
            if length == 0 and address == 0:
                continue
            if length > _MAX_STRING:
                raise LayoutError(f"attribute {name!r} declares a string of {length} bytes")
            objects = self._collection(self.base + address)
            if objects.get(index) != length:
                raise LayoutError(f"attribute {name!r}: its string is not in the heap collection at byte {address}")

    def _collection(self, address: int) -> dict[int, int]:
        """{object index: size} of the global heap collection at ``address``, walked as the HDF5 library walks it
        (H5HG cache deserialisation: an object of index 0 is free space of its size, any other takes 16 bytes
        and its size padded to 8), refusing the walks the library would not finish."""
        got = self._collections.get(address)
        if got is not None:
            return got
        head = self._file.read(address, 16, "a heap collection")
        if head[:5] != b"GCOL\x01":
            raise LayoutError(f"no heap collection at byte {address}")
        size = struct.unpack_from("<Q", head, 8)[0]
        if address + size > self._file.size:
            raise LayoutError(f"the heap collection at byte {address} runs past the end of the file")
        data = self._file.read(address, size, "a heap collection")  # the library reads all of it too
        objects, pos = {}, 16
        while pos + 16 <= size:
            index, _, _, obj_size = HEAP_OBJECT.unpack_from(data, pos)
            step = obj_size if index == 0 else 16 + (obj_size + 7) // 8 * 8
            if step < 16 or pos + step > size:
                raise LayoutError(f"the heap collection at byte {address} holds an object of size {obj_size} at "
                                  f"byte {address + pos}, which does not fit it")
            if index:
                objects[index] = obj_size
            pos += step
        self._collections[address] = objects
        return objects


_TABLES: dict[int, tuple] = {}  # id of an h5py FileID -> (what the file was, its table), dropped with the FileID


def attribute_table(fid) -> AttributeTable:
    """The :class:`AttributeTable` of an open h5py file (``h5py.File.id``), built once per open file.

    (h5py may hand out one FileID object for successive opens of files, and its FileIDs compare equal across
    opens of the same file: the table is kept with the file's device, inode, size and modification time.)
    """
    fd = fid.get_vfd_handle()
    st = os.fstat(fd)
    which = (fd, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    got = _TABLES.get(id(fid))
    if got is not None and got[0] == which:
        return got[1]
    table = AttributeTable(fd)
    if got is None:
        weakref.finalize(fid, _TABLES.pop, id(fid), None)
    _TABLES[id(fid)] = which, table
    return table
