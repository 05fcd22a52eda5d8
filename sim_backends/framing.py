"""Split a byte stream into commands: terminated lines, with IEEE 488.2 definite-length blocks
(#<digits><length><data>) passed through whole even if they contain the terminator.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Message:
    text: str
    """The command with any block cut out (the header text before the block, and after it)."""
    block: bytes | None = None


class FramingError(Exception):
    pass


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
        i, in_quote = 0, False
        block: bytes | None = None
        block_span: tuple[int, int] | None = None
        while i < len(buf):
            ch = buf[i]
            if ch == 0x22:  # "
                in_quote = not in_quote
            elif ch == 0x23 and not in_quote and self.allow_blocks and block is None:  # '#'
                if i + 1 >= len(buf):
                    return None
                digit = buf[i + 1]
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
            elif buf.startswith(term, i):
                raw = bytes(buf[:i])
                del buf[: i + len(term)]
                if block_span is not None:
                    a, b = block_span
                    raw = raw[:a] + raw[b:]
                text = raw.decode("latin-1").strip("\r\n ")
                if not text and block is None:
                    i, in_quote = 0, False  # an empty line is no command
                    continue
                return Message(text, block)
            i += 1
        return None
