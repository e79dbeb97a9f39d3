"""Which language a text or a query is in, which language most of a set of texts is in, and how runs of
Chinese, Japanese and Korean characters are cut into terms."""

import pytest

from ingest.language import CJK_RUN, character_pairs, detect_language, main_language, query_language


@pytest.mark.parametrize(("code", "text"), [
    ("en", "The installation of the system is done over the network. Read the documentation first."),
    ("de", "Die Installation des Systems erfolgt über das Netzwerk. Bitte lesen Sie zuerst die Dokumentation."),
    ("fr", "L'installation du système se fait par le réseau. Veuillez lire la documentation avant de commencer."),
    ("zh", "系统通过网络进行安装。开始之前请仔细阅读文档。长城是中国古代规模最大的军事防御工程。"),
    ("zh", "系統通過網絡進行安裝。開始之前請仔細閱讀文檔。長城是中國古代規模最大的軍事防禦工程。"),
    ("ja", "システムのインストールはネットワーク経由で行います。開始する前にドキュメントをよくお読みください。"),
    ("ru", "Установка системы выполняется по сети. Пожалуйста, внимательно прочитайте документацию."),
])
def test_language_of_a_text(code, text):
    assert detect_language(text) == code


def test_language_detection_takes_odd_text_and_declines_too_little():
    # Control characters, a NUL and a surrogate are what CLD2 refuses as "invalid UTF-8".
    odd = "Text extracted from an old PDF\x00\x01\x0b with control \x7f\x85 characters \ud800 in it, in English."
    assert detect_language(odd) == "en"
    assert detect_language("12 34 -- a b c") is None
    assert detect_language("") is None


def test_main_language_counts_each_once_or_by_weight_and_never_picks_unknown():
    assert main_language(["de", None, "en", "de", ""]) == "de"
    assert main_language(["de", "en", "de"], [10, 50, 10]) == "en"
    assert main_language([None, ""]) is None and main_language([]) is None
    assert main_language(["fr", "en"]) == "fr"  # a tie: the first seen


def test_query_language():
    assert query_language("How do I configure the network interfaces?") == "en"
    assert query_language("Wie konfiguriere ich die Netzwerkschnittstellen?") == "de"
    # Too short for CLD2: told by the script (kana before Han: Japanese mixes both).
    short = ("配置网络", "ネットワーク", "네트워크", "ネットワーク設定")
    assert [query_language(q) for q in short] == ["zh", "ja", "ko", "ja"]
    assert query_language("QX-7731-B") is None


def test_cjk_runs_and_character_pairs():
    assert CJK_RUN.findall("Debian 安装程序 and パッケージ, 한국어!") == ["安装程序", "パッケージ", "한국어"]
    assert CJK_RUN.findall("𠀀𠀁") == ["𠀀𠀁"]  # Han beyond the basic plane counts too
    assert character_pairs("安装程序") == ["安装", "装程", "程序"]
    assert character_pairs("中") == ["中"]  # a lone character stands as itself


def test_the_highlighter_marks_the_terms_the_lexical_index_matches():
    from ingest.lexical import terms
    from kb_app.ui.render import query_terms

    for query in ("长城是谁修建的", "パッケージ管理", "한국어 문서"):
        assert set(query_terms(query)) == set(terms(query))
