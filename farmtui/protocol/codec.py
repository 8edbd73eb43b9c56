"""Encoding and decoding frames: one message or a batch, within their size limits.

Every failure to decode is a one-line ``ProtocolError``. The typed decoders are
beside their unions (``agent_messages``, ``console_messages``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

import msgspec
import msgspec.inspect

# A message bigger than this is refused before it is decoded.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# The longest frame the leader reads from anyone: an agent's hello, the largest of its
# peers' messages (every GPU and tag a node may list). Longer ones close the link before
# they are read, so a peer cannot make the leader read megabytes it would then refuse.
MAX_FRAME_READ_BYTES = 1024 * 1024

encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return encoder.encode(message)


class ProtocolError(ValueError):
    """A message that is malformed, of an unknown type or too big."""


T = TypeVar("T")


# Messages ready at the same moment travel as one JSON array, a batch: one
# frame, one system call and one parse instead of one each (at thousands of
# chunks a second, most of a link's cost was per frame). Only between peers
# that said they read batches (``AgentHello.batches``, ``Welcome.batches``);
# a batch stays within MAX_BATCH_BYTES, far below the frame limit.
MAX_BATCH_BYTES = 256 * 1024
MAX_BATCH_MESSAGES = 1000
# The longest frame a batch makes: its messages and commas within MAX_BATCH_BYTES,
# and its brackets. A longer one is refused unread: decoding 3.8 MB of heartbeats
# only to count them took the leader's loop tens of milliseconds a frame.
MAX_BATCH_FRAME_BYTES = MAX_BATCH_BYTES + 2


def encode_batch(messages: Sequence[bytes]) -> bytes:
    """Encoded messages as one frame: the message itself when there is one."""
    if len(messages) == 1:
        return messages[0]
    return b"[" + b",".join(messages) + b"]"


def decode_batch(
    one: msgspec.json.Decoder[T], many: msgspec.json.Decoder[list[T]], data: bytes | str
) -> list[T]:
    """The messages of a frame (a batch or one message); ProtocolError for the whole frame."""
    head = data[:1]
    if head in (b"[", "["):
        # A str's length in characters is at most its length in UTF-8 bytes.
        if len(data) > MAX_BATCH_FRAME_BYTES:
            raise ProtocolError(f"a batch of {len(data)} bytes is over {MAX_BATCH_FRAME_BYTES}")
        messages = decode_checked(many, data)
        if len(messages) > MAX_BATCH_MESSAGES:
            raise ProtocolError(f"a batch of {len(messages)} messages is over {MAX_BATCH_MESSAGES}")
        return messages
    return [decode_checked(one, data)]


# Larger messages are looked over (``over_long_list``) before they are decoded.
LOOK_OVER_BYTES = 64 * 1024


def over_long_list(data: bytes | str, kind: type[msgspec.Struct]) -> str | None:
    """msgspec's own refusal of a top-level list of ``kind`` longer than its limit, or None.

    msgspec checks a list's ``max_length`` only once it has decoded every item, and
    checks each item's pattern as it goes: a megabyte of one-letter tags (250,000 of
    them, against 64 allowed) held the leader's loop 80 ms before it was refused. A
    struct of those lists alone, their items undecoded (``msgspec.Raw``), every
    other field skipped, counts them first in a sixth of that; it sees every copy of
    a field sent twice, as the typed decode does.
    """
    try:
        _counting(kind).decode(data)
    except msgspec.ValidationError as exc:
        problem = str(exc)
        return problem if problem.startswith("Expected `array` of length <=") else None
    except (msgspec.DecodeError, RecursionError):
        pass  # the typed decode says what is wrong with it
    return None


def _counting(kind: type[msgspec.Struct]) -> msgspec.json.Decoder[msgspec.Struct]:
    """A decoder of ``kind``'s top-level lists that have a ``max_length``, items unread."""
    decoder = _COUNTING.get(kind)
    if decoder is None:
        info = msgspec.inspect.type_info(kind)
        assert isinstance(info, msgspec.inspect.StructType)
        fields: list[tuple[str, object, object]] = []
        for field in info.fields:
            kinds = (
                field.type.types
                if isinstance(field.type, msgspec.inspect.UnionType)
                else (field.type,)
            )
            for each in kinds:
                if isinstance(each, msgspec.inspect.ListType) and each.max_length is not None:
                    meta = msgspec.Meta(max_length=each.max_length)
                    unread = Annotated[list[msgspec.Raw], meta] | None
                    default = msgspec.field(default=None, name=field.encode_name)
                    fields.append((field.name, unread, default))
        counted = msgspec.defstruct(f"{kind.__name__}Lists", fields, kw_only=True)
        decoder = _COUNTING[kind] = msgspec.json.Decoder(counted)
    return decoder


_COUNTING: dict[type[msgspec.Struct], msgspec.json.Decoder[msgspec.Struct]] = {}


def decode_checked(decoder: msgspec.json.Decoder[T], data: bytes | str) -> T:
    """Decode one message, turning every failure into a one-line ProtocolError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    except RecursionError:
        # msgspec walks what it skips (an unknown field's value) on the C stack too.
        raise ProtocolError("malformed message: nested too deeply") from None
