"""E-mail messages (.eml): the headers a reader looks at, the body (plain text, else the HTML part's visible
text) and each text attachment as its own section; binary attachments are named, not read.

Named `mail`, not `email`, so that `import email` below is the standard library's package.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import hashlib
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


@register("eml", ".eml", headings=True)  # its sections: "# Attachment: NAME"; an HTML body's headings
def load_eml(path: Path, *, file_type: str, sha256: str | None, options: ReadOptions) -> LoadedFile:
    source = str(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    warnings = changed_since_listed(sha256, digest)
    if not data.strip():
        return whole_file(source, file_type, path.stem, digest, len(data), "", warnings)
    message = _parse(source, data)
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


def _header(message: Message, name: str) -> str | None:
    """A header's value, decoded (RFC 2047) when it can be, else as written; spaces tidied."""
    try:
        value = message.get(name)
        value = str(value) if value is not None else None
    except (ValueError, IndexError, TypeError, AttributeError, email.errors.HeaderParseError):
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), None)
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
    payload = part.get_payload(decode=True) or b""
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


def _decode_declared(payload: bytes, declared: str | None, warnings: list[str], what: str) -> str:
    """Bytes in the charset the part declares. Non-ASCII text that is valid UTF-8 is read as UTF-8 whatever the
    label says (UTF-8 labelled GB2312 or Latin-1 is a common mislabel, and other charsets' text is almost never
    valid UTF-8); else undecodable bytes are replaced. A wrong label gets a warning."""
    charset = _SUPERSETS.get((declared or "utf-8").lower(), declared or "utf-8")
    try:
        utf8 = payload.decode("utf-8") if not payload.isascii() else None
    except UnicodeDecodeError:
        utf8 = None
    try:
        text = payload.decode(charset)
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
