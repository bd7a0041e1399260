"""How much data a Parquet file says it holds, read from its footer without pyarrow.

Hand-written because polars does not expose row-group sizes before decoding, and pyarrow (which
does) would not fit the Lambda artifact beside polars.

The footer is a Thrift (compact protocol) ``FileMetaData``; each row group records
``total_byte_size``, the uncompressed size of its column data. Summing them tells a small file
that inflates to gigabytes from an honest one before any page is decoded. Only what that needs
is parsed; everything else is skipped field by field, with depth and size bounds so a crafted
footer cannot make the skipping itself expensive.
"""

from __future__ import annotations

from core.validation.readers.text_buffer import Buffer

_MAGIC = b"PAR1"
# Real footers are kilobytes; a bigger one is left to polars rather than walked in Python.
_MAX_FOOTER = 8 * 1024 * 1024
_MAX_DEPTH = 32
# Compact protocol type ids.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = 1, 2, 3, 4, 5, 6, 7, 8
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12
# FileMetaData.row_groups and RowGroup.total_byte_size field ids.
_ROW_GROUPS = 4
_TOTAL_BYTE_SIZE = 2


class FooterError(ValueError):
    """The footer is not what the Parquet format says it is."""


def declared_data_bytes(buf: Buffer) -> int:
    """Sum of the row groups' uncompressed sizes, as the footer declares them."""
    size = len(buf)
    if size < 12 or buf[size - 4 : size] != _MAGIC:
        raise FooterError("no Parquet footer")
    length = int.from_bytes(buf[size - 8 : size - 4], "little")
    if length <= 0 or length > min(_MAX_FOOTER, size - 12):
        raise FooterError("footer length out of range")
    return _Reader(buf[size - 8 - length : size - 8]).file_metadata()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def file_metadata(self) -> int:
        total = 0
        for field_id, kind in self._fields():
            if field_id == _ROW_GROUPS and kind == _LIST:
                count, element = self._list_header()
                if element != _STRUCT:
                    raise FooterError("row groups are not structs")
                for _ in range(count):
                    total += self._row_group()
            else:
                self._skip(kind, 0)
        return total

    def _row_group(self) -> int:
        size = 0
        for field_id, kind in self._fields():
            if field_id == _TOTAL_BYTE_SIZE and kind == _I64:
                size = self.zigzag()
            else:
                self._skip(kind, 1)
        return max(0, size)

    def _fields(self) -> _FieldIter:
        return _FieldIter(self)

    def next_byte(self) -> int:
        if self.at >= len(self.data):
            raise FooterError("footer ends early")
        value = self.data[self.at]
        self.at += 1
        return value

    def _varint(self) -> int:
        result = shift = 0
        while True:
            byte = self.next_byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise FooterError("varint too long")

    def zigzag(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def _list_header(self) -> tuple[int, int]:
        header = self.next_byte()
        count = header >> 4
        if count == 15:
            count = self._varint()
        if count > len(self.data):
            raise FooterError("list longer than the footer")
        return count, header & 0x0F

    def _skip(self, kind: int, depth: int, *, in_container: bool = False) -> None:
        if depth > _MAX_DEPTH:
            raise FooterError("footer nested too deep")
        if kind in (_TRUE, _FALSE):
            if in_container:
                self.next_byte()  # inside a list a bool takes a byte; in a struct, the type says it
        elif kind == _BYTE:
            self.next_byte()
        elif kind in (_I16, _I32, _I64):
            self._varint()
        elif kind == _DOUBLE:
            self._advance(8)
        elif kind == _BINARY:
            self._advance(self._varint())
        elif kind in (_LIST, _SET):
            count, element = self._list_header()
            for _ in range(count):
                self._skip(element, depth + 1, in_container=True)
        elif kind == _MAP:
            count = self._varint()
            if count > len(self.data):
                raise FooterError("map longer than the footer")
            if count:
                types = self.next_byte()
                for _ in range(count):
                    self._skip(types >> 4, depth + 1, in_container=True)
                    self._skip(types & 0x0F, depth + 1, in_container=True)
        elif kind == _STRUCT:
            for _field_id, inner in self._fields():
                self._skip(inner, depth + 1)
        else:
            raise FooterError(f"unknown field type {kind}")

    def _advance(self, n: int) -> None:
        if n < 0 or self.at + n > len(self.data):
            raise FooterError("footer ends early")
        self.at += n


class _FieldIter:
    """The (field id, type) headers of one struct, up to its stop byte."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        self.last = 0

    def __iter__(self) -> _FieldIter:
        return self

    def __next__(self) -> tuple[int, int]:
        header = self.reader.next_byte()
        if header == 0:
            raise StopIteration
        delta, kind = header >> 4, header & 0x0F
        self.last = self.last + delta if delta else self.reader.zigzag()
        return self.last, kind
