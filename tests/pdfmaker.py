"""PDFs written byte by byte, for structures pypdf's writer cannot produce (object streams, xref streams)."""

from __future__ import annotations

import struct
from pathlib import Path


def hyperref_pdf(path: Path, pages: int, links_per_page: int, per_stream: int = 100) -> list[str]:
    """A PDF 1.5 like pdfTeX's with hyperref: page dictionaries and their link annotations packed together
    in object streams, fonts and resources inherited from the page tree. Returns each page's text."""
    plain: dict[int, bytes] = {}  # object number -> body, written as ordinary objects
    packed: dict[int, bytes] = {}  # object number -> body, written in object streams
    plain[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    plain[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    number = 4
    kids, texts = [], []
    for index in range(pages):
        text = f"Page {index + 1} of the manual: glossary entry number {index * 7}."
        texts.append(text)
        content = f"BT /F1 12 Tf 72 700 Td ({text}) Tj ET".encode()
        plain[number] = b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"
        page, annots = number + 1, list(range(number + 2, number + 2 + links_per_page))
        packed[page] = (b"<< /Type /Page /Parent 2 0 R /Contents %d 0 R /Annots [%s] >>"
                        % (number, b" ".join(b"%d 0 R" % a for a in annots)))
        for link in annots:
            packed[link] = (b"<< /Type /Annot /Subtype /Link /Border [0 0 0] /Rect [72 %d 200 %d] "
                            b"/A << /S /URI /URI (https://example.org/%d) >> >>" % (link % 700, link % 700 + 10, link))
        kids.append(page)
        number = annots[-1] + 1 if annots else page + 1
    plain[2] = (b"<< /Type /Pages /Count %d /Kids [%s] /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 3 0 R >> >> >>"
                % (pages, b" ".join(b"%d 0 R" % k for k in kids)))

    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    where: dict[int, tuple[int, int, int]] = {0: (0, 0, 65535)}  # number -> xref (type, field 2, field 3)
    for num in sorted(plain):
        where[num] = (1, len(out), 0)
        out += b"%d 0 obj\n" % num + plain[num] + b"\nendobj\n"
    numbers = sorted(packed)
    for start in range(0, len(numbers), per_stream):
        group, stream = numbers[start:start + per_stream], number
        number += 1
        header, body = [], bytearray()
        for position, num in enumerate(group):
            header.append(b"%d %d" % (num, len(body)))
            body += packed[num] + b"\n"
            where[num] = (2, stream, position)
        head = b" ".join(header) + b"\n"
        data = head + bytes(body)
        where[stream] = (1, len(out), 0)
        out += (b"%d 0 obj\n<< /Type /ObjStm /N %d /First %d /Length %d >>\nstream\n"
                % (stream, len(group), len(head), len(data)) + data + b"\nendstream\nendobj\n")
    xref = number
    where[xref] = (1, len(out), 0)
    rows = b"".join(struct.pack(">BIH", *where[num]) for num in range(xref + 1))
    out += (b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 4 2] /Root 1 0 R /Length %d >>\nstream\n"
            % (xref, xref + 1, len(rows)) + rows + b"\nendstream\nendobj\n")
    out += b"startxref\n%d\n%%%%EOF\n" % where[xref][1]
    path.write_bytes(bytes(out))
    return texts
