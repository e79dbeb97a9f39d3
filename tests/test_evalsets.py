"""bench.evalsets on a two-language DocBook book in the handbook's own HTML shape: sections aligned by
element id, numbering stripped from titles, untranslated text kept out of the cross-lingual queries."""

import json

from bench.evalsets import build, sections
from kb_app.evaluate import load_beir

PAGE = """<html><body><div class="chapter"><div class="section"><div class="titlepage"><div><div>
<h2 class="title"><a id="sect.apt"></a>{n}6.1. {apt}</h2></div></div></div>
<div class="para">{apt_para}</div>
<div class="section"><div class="titlepage"><div><div><h3 class="title"><a id="id-1.2.3"></a>6.1.1. {syntax}</h3>
</div></div></div><div class="para">{syntax_para}</div></div></div></div></body></html>"""


def _book(root):
    en = root / "en-US"
    zh = root / "zh-CN"
    en.mkdir(parents=True)
    zh.mkdir(parents=True)
    (en / "apt.html").write_text(PAGE.format(
        n="", apt="Filling in the sources.list File",
        apt_para="Each active line of the sources list names a package repository and the parts of it to use.",
        syntax="Syntax", syntax_para="A line starts with the source type, deb for binary packages or deb-src."))
    (zh / "apt.html").write_text(PAGE.format(
        n="", apt="编写 sources.list 文件", apt_para="源列表中的每一行有效内容都指定一个软件包仓库以及要使用的部分。",
        syntax="语法",
        syntax_para="A line starts with the source type, deb for binary packages or deb-src."))  # left untranslated


def test_sections_align_across_languages_and_untranslated_text_is_not_a_query(tmp_path):
    _book(tmp_path / "book")
    found = sections(tmp_path / "book" / "en-US")
    assert list(found) == ["sect.apt", "id-1.2.3"]
    assert found["sect.apt"].title == "Filling in the sources.list File"  # "6.1." stripped
    assert "deb-src" not in found["sect.apt"].text and "deb-src" in found["id-1.2.3"].text  # subsections apart
    target = build("zh-CN", "en-US", tmp_path / "book", tmp_path / "sets")
    queries = [json.loads(line) for line in (target / "queries.jsonl").read_text().splitlines()]
    assert {q["_id"] for q in queries} == {"title:sect.apt", "para:sect.apt", "title:id-1.2.3"}
    assert target.name == "handbook-zh-en"
    evalset = load_beir(target)
    assert evalset.qrels["para:sect.apt"] == {"sect.apt": 1} and len(evalset.corpus) == 2
    same = build("en-US", "en-US", tmp_path / "book", tmp_path / "sets")
    assert {json.loads(line)["_id"] for line in (same / "queries.jsonl").read_text().splitlines()} == {
        "title:sect.apt", "title:id-1.2.3"}  # in one language, titles only
