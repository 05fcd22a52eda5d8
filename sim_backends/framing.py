"""Split a byte stream into commands: terminated lines, with IEEE 488.2 arbitrary blocks
passed through whole: definite length (#<digits><length><data>) even if the data contain the
terminator, and indefinite length (#0<data>) up to the end of the message (its terminator:
on a socket there is no END signal, so the data of a #0 block cannot contain it). A '#'
inside a string ("..." or '...', the quote doubled inside) starts no block.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
QUOTES = (0x22, 0x27)  # " and '


@dataclass(frozen=True)
class Message:
    text: str
    """The command with any block cut out (the header text before the block, and after it)."""
    block: bytes | None = None


class FramingError(Exception):
    pass


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """`text` split at `separator` where it stands outside "..." and '...' strings."""
    parts, current, quote = [], [], ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == separator:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


class Framer:
    def __init__(self, terminator: bytes = b"\n", allow_blocks: bool = True) -> None:
        self.terminator = terminator
        self.allow_blocks = allow_blocks
        self._buf = bytearray()

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Message | FramingError]:
        """Messages complete so far; a malformed one becomes a FramingError in the list."""
        self._buf += data
        out: list[Message | FramingError] = []
        while True:
            try:
                found = self._next()
            except FramingError as e:
                out.append(e)
                continue
            if found is None:
                break
            out.append(found)
        if len(self._buf) > MAX_MESSAGE_BYTES:
            self._buf.clear()
            out.append(FramingError(f"message longer than {MAX_MESSAGE_BYTES} bytes discarded"))
        return out

    def _next(self) -> Message | None:
        buf, term = self._buf, self.terminator
        i, quote = 0, 0
        block: bytes | None = None
        block_span: tuple[int, int] | None = None
        while i < len(buf):
            ch = buf[i]
            if quote:
                if ch == quote:
                    quote = 0
            elif ch in QUOTES and self.allow_blocks:
                quote = ch
            elif ch == 0x23 and self.allow_blocks and block is None:  # '#'
                if i + 1 >= len(buf):
                    return None
                digit = buf[i + 1]
                if digit == 0x30:  # #0: indefinite length, to the end of the message
                    end = buf.find(term, i + 2)
                    if end < 0:
                        return None
                    block = bytes(buf[i + 2 : end])
                    block_span = (i, end)
                    i = end
                    continue
                if 0x31 <= digit <= 0x39:
                    n = digit - 0x30
                    if i + 2 + n > len(buf):
                        return None
                    digits = bytes(buf[i + 2 : i + 2 + n])
                    length = int(digits) if digits.isdigit() else -1
                    if not 0 <= length <= MAX_MESSAGE_BYTES:
                        # not a block we can take: drop this command up to its terminator
                        end = buf.find(term, i + 2 + n)
                        if end < 0:
                            return None
                        del buf[: end + len(term)]
                        why = "garbled" if length < 0 else f"too large ({length} bytes)"
                        raise FramingError(f"block header {digits!r}: {why}")
                    start = i + 2 + n
                    if start + length > len(buf):
                        return None
                    block = bytes(buf[start : start + length])
                    block_span = (i, start + length)
                    i = start + length
                    continue
            if buf.startswith(term, i):  # (an unterminated string ends with its message)
                found = self._cut(i, block, block_span)
                if found is not None:
                    return found
                i, quote = 0, 0  # an empty line is no command
                continue
            i += 1
        return None

    def _cut(
        self, i: int, block: bytes | None, block_span: tuple[int, int] | None
    ) -> Message | None:
        buf, term = self._buf, self.terminator
        raw = bytes(buf[:i])
        del buf[: i + len(term)]
        if block_span is not None:
            a, b = block_span
            raw = raw[:a] + raw[b:]
        text = raw.decode("latin-1").strip("\r\n ")
        if not text and block is None:
            return None
        return Message(text, block)
