"""E-mail messages (.eml): the headers a reader looks at, the body (plain text, else the HTML part's visible
text) and each text attachment as its own section; binary attachments are named, not read.

A message cut short (a download or copy that stopped) is read up to the cut: a base64 body cut mid-quantum is
decoded (the standard library hands it back still encoded), a character split by the cut is dropped, a part header
split by it is not taken for body text, and a missing closing MIME boundary is named in a warning.

Named `mail`, not `email`, so that `import email` below is the standard library's package.
"""

from __future__ import annotations

import base64
import codecs
import email
import email.errors
import email.policy
import hashlib
import re
from email.message import EmailMessage, Message
from pathlib import Path

from ..documents import LoadedFile, changed_since_listed, whole_file
from ..errors import LoadError
from . import ReadOptions, register
from .html import html_to_text
from .text import decode

_HEADERS = ("Subject", "From", "To", "Cc", "Date")
# Headers every real message has at least one of: a file with none of them is not an e-mail.
_MAIL_HEADERS = {"from", "to", "subject", "date", "message-id", "received", "mime-version", "return-path",
                 "sender", "cc", "delivered-to", "reply-to"}
_TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".csv", ".tsv", ".rst", ".log", ".json", ".xml")
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Outlook's .msg (a compound file), sometimes misnamed .eml
# Charsets mail clients declare for text written in a superset of them.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "us-ascii": "utf-8", "ascii": "utf-8", "ks_c_5601-1987": "cp949"}
_MAX_DEPTH = 3  # forwarded messages inside forwarded messages, read this deep
_CUT_ESCAPE = re.compile(r"=[0-9A-Fa-f]\Z")
_CUT_WORD = re.compile(r"\s*=\?[\w.-]+(?:\?[BbQq]?(?:\?[^\s?]*\??)?)?\Z")  # an RFC 2047 word without its "?="
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*:?")  # all that is left of a header line the file's end cut
_TRUNCATED = "truncated e-mail: a MIME part has no closing boundary (the file may be cut short); the text up to " \
             "there is read"


@register("eml", ".eml", headings=True)  # its sections: "# Attachment: NAME"; an HTML body's headings
def load_eml(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    source = str(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    warnings = changed_since_listed(sha256, digest)
    if not data.strip():
        return whole_file(source, file_type, path.stem, digest, len(data), "", warnings)
    message = _parse(source, data)
    if any(isinstance(defect, email.errors.CloseBoundaryNotFoundDefect)
           for part in message.walk() for defect in part.defects):
        warnings.append(_TRUNCATED)
        cut = _cut_boundary(message, data)
        if cut is not None:
            message = _parse(source, data[:cut])
    text = _message_text(message, warnings, 0)
    title = _header(message, "Subject") or path.stem
    return whole_file(source, file_type, title, digest, len(data), text, warnings)


def _parse(source: str, data: bytes) -> EmailMessage:
    """The message, or LoadError for a file that is not one (binary, or no mail headers at all)."""
    if data.startswith(_OLE2):
        raise LoadError(source, "an Outlook .msg file, not an .eml message: kb reads .eml (save the message as .eml)")
    if b"\x00" in data[:8192]:
        raise LoadError(source, "binary content, not an e-mail message")
    message = email.message_from_bytes(data, policy=email.policy.default)
    if not {name.lower() for name in message.keys()} & _MAIL_HEADERS:
        raise LoadError(source, "not an e-mail message: no mail headers (From, To, Subject, Date...)")
    return message


def _cut_boundary(message: EmailMessage, data: bytes) -> int | None:
    """Where the file's last line starts when it is the start of a MIME boundary line that the file's end cut
    (it would be read as the end of the last part's text), else None."""
    start = data.rfind(b"\n") + 1
    last = data[start:].rstrip(b"\r")
    if not last.startswith(b"-"):
        return None
    boundaries = [part.get_boundary() for part in message.walk() if part.is_multipart()]
    return start if any(f"--{b}".encode("latin-1", "replace").startswith(last) for b in boundaries if b) else None


def _header(message: Message, name: str) -> str | None:
    """A header's value, decoded (RFC 2047) when it can be, else as written (a date always as written: the library
    rewrites one cut short, "09:1" as "09:01:00 -0000"); spaces tidied; an encoded word that the file's end cut
    ("=?utf-8?b?4oC") dropped."""
    value = None
    if name != "Date":
        try:
            found = message.get(name)
            value = str(found) if found is not None else None
        except (ValueError, IndexError, TypeError, AttributeError, email.errors.HeaderParseError):
            pass
    if value is None:
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), None)
    value = _CUT_WORD.sub("", value) if value else value
    return " ".join(value.split()) if value and value.strip() else None


def _message_text(message: EmailMessage, warnings: list[str], depth: int) -> str:
    """Header lines, the body, then a section per attachment."""
    lines = [f"{name}: {value}" for name in _HEADERS if (value := _header(message, name))]
    sections = ["\n".join(lines)]
    body = message.get_body(preferencelist=("plain", "html")) if message.is_multipart() else message
    if body is not None and body.get_content_maintype() == "text":
        sections.append(_part_text(body, warnings, "the message body"))
    attachments = list(message.iter_attachments()) if message.is_multipart() else []
    for number, part in enumerate(_leaves(attachments), 1):
        sections.append(_attachment(part, number, warnings, depth))
    return "\n\n".join(section.strip() for section in sections if section.strip())


def _leaves(parts: list[EmailMessage]) -> list[EmailMessage]:
    """Attachments, with those packed in a nested multipart taken out of it."""
    leaves: list[EmailMessage] = []
    for part in parts:
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            leaves.extend(_leaves(list(part.iter_parts())))
        else:
            leaves.append(part)
    return leaves


def _attachment(part: EmailMessage, number: int, warnings: list[str], depth: int) -> str:
    """One attachment as a `# Attachment: NAME` section when it is text or a forwarded message, else its name."""
    name = " ".join((part.get_filename() or "").split()) or f"part {number} ({part.get_content_type()})"
    if part.get_content_type() == "message/rfc822" and depth < _MAX_DEPTH:
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        if isinstance(inner, EmailMessage):
            return f"# Attachment: {name}\n\n{_message_text(inner, warnings, depth + 1)}"
    if part.get_content_maintype() == "text" or name.lower().endswith(_TEXT_SUFFIXES):
        text = _part_text(part, warnings, f"attachment {name!r}")
        if text.strip():
            return f"# Attachment: {name}\n\n{text}"
    return f"Attachment (not read): {name}"


def _part_text(part: EmailMessage, warnings: list[str], what: str) -> str:
    """A text part decoded by its declared charset (undecodable bytes replaced, with a warning); HTML to its
    visible text."""
    payload = _payload(part)
    declared = part.get_content_charset()
    if part.get_content_maintype() != "text" and not declared:
        try:
            text = decode(what, payload)  # a .txt sent as application/octet-stream: detect its encoding
        except LoadError:
            return ""
    else:
        text = _decode_declared(payload, declared, warnings, what)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "html":
        text = html_to_text(text)[1]
    return text


def _payload(part: EmailMessage) -> bytes:
    """The part's bytes, its transfer encoding undone. A base64 body cut one character past a whole quantum is
    decoded up to the cut (the library gives such a body back undecoded), so is a quoted-printable one cut inside an
    escape; a body that is only the start of a header line (a part's headers cut by the file's end) is none."""
    if any(isinstance(defect, email.errors.MissingHeaderBodySeparatorDefect) for defect in part.defects):
        raw = part.get_payload()
        if isinstance(raw, str) and _HEADER_NAME.fullmatch(raw.strip()):
            return b""
    payload = part.get_payload(decode=True) or b""
    if any(isinstance(defect, email.errors.InvalidBase64LengthDefect) for defect in part.defects):
        encoded = re.sub(rb"[^A-Za-z0-9+/]", b"", payload)
        encoded = encoded[:-1] if len(encoded) % 4 == 1 else encoded  # a lone last character holds no byte
        payload = base64.b64decode(encoded + b"=" * (-len(encoded) % 4))
    elif (part.get("content-transfer-encoding", "").strip().lower() == "quoted-printable"
          and isinstance(raw := part.get_payload(), str) and _CUT_ESCAPE.search(raw[-2:])
          and payload.endswith(raw[-2:].encode("ascii"))):
        payload = payload[:-2]  # "=E" at the end: an escape cut in two, kept as written by the library
    return payload


def _strict(payload: bytes, charset: str) -> str:
    """`payload` decoded strictly, but for an incomplete last character (the message was cut there): dropped.
    LookupError for a charset that is no text encoding (a message may declare "zlib" or "rot13")."""
    codec = codecs.lookup(charset)
    if not getattr(codec, "_is_text_encoding", True):  # as bytes.decode refuses them; "zlib" would inflate a bomb
        raise LookupError(f"{charset!r} is not a text encoding")
    try:
        return codec.incrementaldecoder().decode(payload, final=False)
    except UnicodeDecodeError:
        raise
    except UnicodeError:  # a stateful decoder's own complaint (UTF-16 without a BOM): read as bytes.decode reads it
        return payload.decode(charset)


def _decode_declared(payload: bytes, declared: str | None, warnings: list[str], what: str) -> str:
    """Bytes in the charset the part declares. Non-ASCII text that is valid UTF-8 is read as UTF-8 whatever the
    label says (UTF-8 labelled GB2312 or Latin-1 is a common mislabel, and other charsets' text is almost never
    valid UTF-8); else undecodable bytes are replaced. A wrong label gets a warning."""
    charset = _SUPERSETS.get((declared or "utf-8").lower(), declared or "utf-8")
    try:
        utf8 = _strict(payload, "utf-8") if not payload.isascii() else None
    except UnicodeDecodeError:
        utf8 = None
    try:
        text = _strict(payload, charset)
    except (LookupError, UnicodeDecodeError) as exc:
        if utf8 is None and payload.isascii():
            return payload.decode("ascii")
        if utf8 is None:
            fallback = "utf-8" if isinstance(exc, LookupError) else charset
            said = f"its declared charset {declared!r}" if declared else "UTF-8 (no charset declared)"
            warnings.append(f"{what}: text is not in {said}; undecodable bytes replaced")
            return payload.decode(fallback, errors="replace")
        text = None
    if utf8 is not None and text != utf8:
        warnings.append(f"{what}: declared charset {declared!r} is wrong; read as UTF-8")
        return utf8
    return text or ""
