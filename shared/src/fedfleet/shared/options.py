"""Click parameter types shared by the server and client commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # click is generic from 8.5 on; at run time older ones must work too
    _PartitionBase = click.ParamType[tuple[int, int], object]
    _AddressBase = click.ParamType[str, object]
else:
    _PartitionBase = _AddressBase = click.ParamType


class PartitionType(_PartitionBase):
    """``I/N``: this device holds partition I (0-based) of N of a shared dataset."""

    name = "I/N"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, int]:
        """Parse ``"0/3"`` into ``(0, 3)``."""
        if isinstance(value, tuple) and len(value) == 2:
            return value
        index, sep, total = str(value).partition("/")
        try:
            i, n = int(index), int(total)
        except ValueError:
            i, n = -1, 0
        if not sep or n < 1 or not 0 <= i < n:
            self.fail(f"{value!r} is not I/N with 0 <= I < N (example: 0/3)", param, ctx)
        return i, n


class AddressType(_AddressBase):
    """``host:port`` of a SuperLink."""

    name = "HOST:PORT"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        """Check there is a host and a numeric port."""
        text = str(value).strip()
        if "://" in text:
            self.fail(f"{text!r}: give host:port without a scheme "
                      "(example: fl.example.org:8000)", param, ctx)
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{text!r} is not host:port (example: 192.168.1.10:8000)",
                      param, ctx)
        return text


PARTITION = PartitionType()
ADDRESS = AddressType()
