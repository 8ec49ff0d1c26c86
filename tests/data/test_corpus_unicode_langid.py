"""Unicode repair (ftfy, with a fast path) and language identification (pycld2 / langdetect)."""
import ftfy
import pytest

from gopher_jax.data.corpus import langid
from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.unicode_repair import fix_text, repair_unicode
from tests.fixtures.paths import gutenberg


def test_fast_path_equals_ftfy_on_real_and_broken_text():
    with open(gutenberg(11), encoding="utf-8") as f:
        book = f.read()  # BOM, CRLF, curly quotes
    broken = "The cafÃ© said â€œhelloâ€\r\nplain ascii line &amp; more\nok\x00line\n"
    for text in (book, broken, "plain ascii only\n"):
        assert fix_text(text) == ftfy.fix_text(text)
    assert fix_text(broken) == 'The café said "helloâ€\nplain ascii line & more\nokline\n'


def test_repair_records_the_change():
    doc = Doc(id="x", source="s", text="caf\u00c3\u00a9")
    fixed = repair_unicode(doc)
    assert fixed.text == "café" and fixed.changes == ("unicode:fixed",)
    assert repair_unicode(Doc(id="y", source="s", text="clean")).changes == ()


@pytest.mark.parametrize("identifier", ["pycld2", "langdetect"])
def test_language_identification(identifier):
    cfg = langid.LangIdConfig(identifier=identifier)
    en = Doc(id="a", source="s", text="The quick brown fox jumps over the lazy dog near the river bank today.")
    fr = Doc(id="b", source="s", text="Le renard brun saute par-dessus le chien paresseux près de la rivière.")
    assert langid.filter_language(en, cfg).alive
    assert langid.filter_language(fr, cfg).drop == "langid:not_en"
    assert langid.filter_language(fr, langid.LangIdConfig(identifier=identifier, languages=("fr",))).alive


def test_bad_identifier_is_named():
    with pytest.raises(ValueError, match="identifier='cld9'"):
        langid.LangIdConfig(identifier="cld9")
