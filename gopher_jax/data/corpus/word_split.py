"""Word splitting for the Gopher quality and repetition rules: whitespace, or datatrove's reading.

The Gopher paper does not define "word". This project's default splits on whitespace. datatrove
(the implementation behind FineWeb) splits English with spaCy's rule-based tokenizer, so
punctuation becomes words of its own: '"Hello," she said.' is 7 words there, 3 here.
`datatrove_words` reproduces that tokenizer's rules for English with the standard library's
`re`, so the datatrove-compatible mode (gin_configs/data/datatrove_compat.gin) needs no spaCy;
tests/data/test_corpus_word_split.py compares it with the real tokenizer on real web text.

The rules (spaCy's English tokenizer, as datatrove calls it via `spacy.blank("en")`):
1. split on whitespace;
2. repeatedly peel one prefix (opening punctuation, quotes, currency, symbols, "..." runs) and
   one suffix (closing punctuation, quotes, "'s", units or currency after a number, a final
   period unless it ends an initial such as "J." or a listed abbreviation such as "Dr.");
3. keep a web address or a listed exception whole ("U.S.", "e.g."), split contractions
   ("don't" -> "do", "n't"; "I'm" -> "I", "'m");
4. split the rest at infixes: "...", a hyphen or "/:<>=" between a letter or digit and a letter,
   a comma between letters, a period between a lower- and an upper-case letter, arithmetic
   signs between digits.
Remaining differences (rare spaCy exceptions such as emoticons, "gonna"; uncommon abbreviations)
are listed in docs/data_pipeline.md.
"""
from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from typing import NamedTuple

import numpy as np

WORD_SPLITS = ("whitespace", "datatrove")

_QUOTES = "'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_PUNCT = ",:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_CURRENCY = ("US$", "C$", "A$", *"$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿")
_UNITS = ("km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz "
          "m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %").split()
# Unicode "other symbols" (emoji, ©, ®, °, arrows...) are words of their own; letters by case.
_TERMINAL_NAMES = ("FULL STOP", "QUESTION MARK", "EXCLAMATION MARK")


@functools.cache
def _unicode_classes() -> tuple[list[int], list[int], list[int], list[int]]:
    """Returns the code points of (So symbols, Ll letters, Lu letters, sentence-final Po marks).

    Built on first use, not at import: walking all 1.1M code points takes ~1 s, which every
    process that merely imports the corpus configs (train, eval, their tests) would otherwise pay.
    """
    symbols, lower, upper, terminal = [], [], [], []
    for i in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(i))
        if cat == "So":
            symbols.append(i)
        elif cat == "Po" and any(k in unicodedata.name(chr(i), "") for k in _TERMINAL_NAMES):
            terminal.append(i)
        elif cat == "Ll":
            lower.append(i)
        elif cat == "Lu":
            upper.append(i)
    return symbols, lower, upper, terminal


_HYPHENS = r"---|--|——|[-–—~]"
_ALPHA = r"[^\W\d_]"


def _chars(s: str) -> str:
    return "".join(re.escape(c) for c in s)


def _ranges(points: list[int]) -> str:
    """Returns a character-class body for sorted code points, consecutive runs as ranges."""
    out, start = [], 0
    for i in range(1, len(points) + 1):
        if i == len(points) or points[i] != points[i - 1] + 1:
            lo, hi = chr(points[start]), chr(points[i - 1])
            out.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
            start = i
    return "".join(out)


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# Web addresses stay whole: optional scheme and user, dotted host labels of at most 63
# characters, a lower-case top-level domain (so "end.The" is no address), port, path.
_HOST_CHAR = "A-Za-z0-9\u00a1-\uffff"
class _Patterns(NamedTuple):
    prefix: re.Pattern
    suffix: re.Pattern
    infix: re.Pattern
    url: re.Pattern


@functools.cache
def _patterns() -> _Patterns:
    """Returns the compiled prefix / suffix / infix / web-address patterns (built on first use)."""
    symbol_points, lower_points, upper_points, _ = _unicode_classes()
    symbols = _ranges(symbol_points)
    lower, upper = f"[{_ranges(lower_points)}]", f"[{_ranges(upper_points)}]"
    prefix = re.compile(rf"(?:{_alternatives(_CURRENCY)}|\.\.+|[§%=—–…{_chars(_QUOTES + _PUNCT) + symbols}]"
                        rf"|\+(?![0-9]))")
    suffix = re.compile(
        rf"(?:\.\.+|['’][sS]|[—–…{_chars(_QUOTES + _PUNCT) + symbols}]|(?<=[0-9])\+"
        rf"|(?<=[0-9])(?:{_alternatives(_CURRENCY + tuple(_UNITS))})"
        rf"|(?<=°[FfCcKk])\.|(?<=[0-9%²+{_chars(_PUNCT + _QUOTES)}\-]|{lower})\.|(?<={upper}{upper})\.)$")
    infix = re.compile(
        rf"\.\.+|…|[{symbols}]|(?<=[0-9])[+\-*^](?=[0-9-])"
        rf"|(?<={lower}|[{_chars(_QUOTES)}])\.(?={upper}|[{_chars(_QUOTES)}])"
        rf"|(?<={_ALPHA}),(?={_ALPHA})|(?<=[^\W_])(?:{_HYPHENS})(?={_ALPHA})|(?<=[^\W_])[:<>=/](?={_ALPHA})")
    # Web addresses stay whole: optional scheme and user, dotted host labels of at most 63
    # characters, a lower-case top-level domain (so "end.The" is no address), port, path.
    url = re.compile(rf"(?:[\w+\-.]{{2,}}://)?(?:\S+(?::\S*)?@)?"
                     rf"(?:(?:[{_HOST_CHAR}][{_HOST_CHAR}_-]{{0,62}})?[{_HOST_CHAR}]\.)+{lower}{{2,63}}"
                     rf"(?::\d{{2,5}})?(?:[/?#]\S*)?$")
    return _Patterns(prefix, suffix, infix, url)


_HOST_CHAR = "A-Za-z0-9\u00a1-\uffff"

# Words kept whole although the rules above would split them (the common ones of spaCy's list).
_KEEP = set(
    "Mr. Mrs. Ms. Dr. St. Jr. Mt. vs. v. Inc. Ltd. Co. Corp. Bros. Gen. Gov. Sen. Rep. Rev. Adm. "
    "Capt. Col. Lt. Sgt. Messrs. Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. "
    "e.g. E.g. E.G. i.e. I.e. I.E. a.m. p.m. Ph.D. U.S. U.K. D.C. N.Y. L.A. "
    "Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. Ga. Ill. Ind. Kan. Kans. Ky. La. Mass. Md. Mich. "
    "Minn. Miss. Mo. Mont. Neb. Nev. N.C. N.D. N.H. N.J. N.M. Okla. Ore. Pa. R.I. S.C. S.D. Tenn. "
    "Va. Vt. Wash. Wis. Wyo. and/or w/o w/ A+ C++ '' 'em ’em ol’ 's 'S ’s ’S 'd 'll 're n't "
    ":) :( :-) :-( ;) ;-) :D :P :/ :0 =) (: ): 8) xD <3 o.O O.o -_- ^_^".split())
_INITIAL = re.compile(r"[A-Za-z]\.$")  # "g." stays one word (an upper-case one does by rule 2)
# Whole words split in two, lower-case or capitalised: "cannot" -> "can", "not"; contractions
# written without their apostrophe: "dont" -> "do", "nt"; "im" -> "i", "m".
_TWO_PARTS = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3, "cant": 2, "dont": 2, "didnt": 3,
              "doesnt": 4, "isnt": 2, "wasnt": 3, "wont": 2, "aint": 2, "hadnt": 3, "hasnt": 3,
              "havent": 4, "couldnt": 5, "shouldnt": 6, "wouldnt": 5, "arent": 3, "werent": 4,
              "mustnt": 4, "im": 1, "id": 1, "ive": 1, "thats": 4, "whats": 4, "youre": 3, "youll": 3,
              "youve": 3, "youd": 3, "hes": 2, "shes": 3, "theyre": 4, "theyll": 4, "theyve": 4,
              "theyd": 4, "itll": 2, "weve": 2}
_TWO_PART_FORMS = {form for w in _TWO_PARTS for form in (w, w.title(), w.upper())}
# Contractions split after these words: "I'm", "you're", "we've", "they'll", "he'd", "could've".
_CONTRACTED = set("i you he she it we they who what where when why how there that this these those "
                  "here let could would should might must".split())
_CLOCK = re.compile(r"(1[0-2]|[1-9])([ap]\.?m\.?)$", re.IGNORECASE)  # "12pm" -> "12", "pm"
_CONTRACTION = re.compile(r"(?i)^(.+?)(n['’]t|['’](?:m|re|ve|ll|d))$")


def _exception(word: str) -> list[str] | None:
    """Returns the words of a whole-token exception, or None when the general rules apply."""
    if word in _KEEP or _INITIAL.match(word):
        return [word]
    m = _CLOCK.match(word)
    if m:
        return list(m.groups())
    cut = _TWO_PARTS.get(word.lower())
    if cut and (word.islower() or word.istitle()):
        return [word[:cut], word[cut:]]
    m = _CONTRACTION.match(word)
    if m and m.group(1).isalpha():
        head, tail = m.groups()
        if tail[0] in "nN":  # don't -> do n't; can't -> ca n't; won't -> wo n't
            return [head, tail]
        if head.lower() in _CONTRACTED:
            return [head, tail]
    return None


def _split_chunk(chunk: str) -> list[str]:
    patterns = _patterns()
    prefixes, suffixes = [], []
    special = _exception(chunk)
    while special is None and chunk:
        # One prefix and one suffix per round, as spaCy's tokenizer peels them.
        # Suffixes are at most 4 characters, or a run of periods.
        dots = len(chunk) - len(chunk.rstrip("."))
        tail = len(chunk) - dots if dots >= 2 else max(0, len(chunk) - 5)
        pre, suf = patterns.prefix.match(chunk), patterns.suffix.search(chunk, tail)
        p = pre.end() if pre else 0
        s = len(chunk) - suf.start() if suf else 0
        if not p and not s:
            break
        # An exception right after the prefix or before the suffix stops the peeling ("(e.g.").
        if p and _exception(chunk[p:]) is not None:
            s = 0
        elif s and _exception(chunk[:len(chunk) - s]) is not None:
            p = 0
        if p and s and p + s <= len(chunk):
            prefixes.append(chunk[:p])
            suffixes.append(chunk[len(chunk) - s:])
            chunk = chunk[p:len(chunk) - s]
        elif p:
            prefixes.append(chunk[:p])
            chunk = chunk[p:]
        else:
            suffixes.append(chunk[len(chunk) - s:])
            chunk = chunk[:len(chunk) - s]
        special = _exception(chunk) if chunk else None
    if special is not None:
        middle = special
    elif not chunk:
        middle = []
    elif patterns.url.match(chunk):
        middle = [chunk]
    else:
        middle, last = [], 0
        for m in patterns.infix.finditer(chunk):
            if m.start() > last:
                middle.append(chunk[last:m.start()])
            if m.end() > m.start():
                middle.append(m.group())
            last = m.end()
        if last < len(chunk):
            middle.append(chunk[last:])
    return prefixes + middle + suffixes[::-1]


class _CharTables(NamedTuple):
    punctuation: frozenset  # datatrove's punctuation characters
    is_alpha_bmp: np.ndarray  # per BMP code point: str.isalpha
    is_punct_bmp: np.ndarray  # per BMP code point: datatrove punctuation, or the space


@functools.cache
def _char_tables() -> _CharTables:
    """Returns datatrove's punctuation set and the per-code-point lookup tables (built on first use).

    datatrove's punctuation: ASCII punctuation, control characters, common typographic marks and
    sentence-final marks of every script. A word made only of these is a "symbol word" there. The
    tables cover the Basic Multilingual Plane; the space is "punctuation" there only because it
    separates words in word_stats. Other code points are looked up when seen.
    """
    punctuation = frozenset(
        string.punctuation + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
        + "—–…“”„’´«»►━∶～％．，、；：？！（）。「」【】《》〈〉" + "".join(map(chr, _unicode_classes()[3])))
    is_alpha = np.array([chr(i).isalpha() for i in range(0x10000)])
    is_punct = np.array([chr(i) in punctuation or i == 32 for i in range(0x10000)])
    return _CharTables(punctuation, is_alpha, is_punct)


def is_symbol_word(word: str) -> bool:
    """Returns True when every character of word is punctuation in datatrove's sense."""
    return _char_tables().punctuation.issuperset(word)


_last_stats: tuple = (None, None)


def word_stats(words: list[str]) -> tuple[int, int, int]:
    """Returns (words that are not all punctuation, their characters, words with a letter).

    Vectorised over the words (one array of code points); the last result is reused for the
    same list object, so the quality rules can ask for it more than once.
    """
    global _last_stats
    last = _last_stats
    if last[0] is words:
        return last[1]
    if not words:
        return 0, 0, 0
    cps = np.frombuffer(" ".join(words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    tables = _char_tables()
    clipped = np.minimum(cps, 0xFFFF)
    alpha, punct = tables.is_alpha_bmp[clipped], tables.is_punct_bmp[clipped]
    astral = np.flatnonzero(cps > 0xFFFF)
    if len(astral):
        chars = [chr(c) for c in cps[astral].tolist()]
        alpha[astral] = [c.isalpha() for c in chars]
        punct[astral] = [c in tables.punctuation for c in chars]
    starts = np.concatenate(([0], np.flatnonzero(cps == 32) + 1))
    lengths = np.diff(np.append(starts, len(cps) + 1)) - 1
    counted = ~np.minimum.reduceat(punct, starts)
    stats = (int(counted.sum()), int(lengths[counted].sum()), int(np.maximum.reduceat(alpha, starts).sum()))
    _last_stats = (words, stats)
    return stats


_chunk_cache: dict[str, list[str]] = {}
_CACHE_LIMIT = 500_000


# (text, its words) of the last call: the quality and repetition filters share one split. One
# tuple, read once per call, so threads (Beam) never pair one text with another's words.
_last: tuple = (None, None)


def datatrove_words(text: str) -> list[str]:
    """Returns text's words as datatrove's English word tokenizer (spaCy rules) splits them.

    The list is shared with the next call on the same text object: do not modify it.
    """
    global _last
    last = _last
    if last[0] is text:
        return last[1]
    out = []
    cache = _chunk_cache
    if len(cache) > _CACHE_LIMIT:
        cache.clear()
    for chunk in text.split():
        # Most chunks are plain words (letters only, no exception); the rest repeat (", the").
        if chunk.isalpha() and chunk not in _TWO_PART_FORMS:
            out.append(chunk)
            continue
        words = cache.get(chunk)
        if words is None:
            words = cache[chunk] = _split_chunk(chunk)
        out.extend(words)
    _last = (text, out)
    return out


def split_words(text: str, how: str) -> list[str]:
    """Returns text's words: `how` is "whitespace" (str.split) or "datatrove"."""
    if how == "whitespace":
        return text.split()
    if how == "datatrove":
        return datatrove_words(text)
    raise ValueError(f"word_split={how!r}: expected one of {WORD_SPLITS}")
