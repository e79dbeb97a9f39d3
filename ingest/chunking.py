"""Cut a document's text into chunks bounded in the embedding model's own tokens.

langchain-text-splitters finds structure-aware split points (headings, paragraphs, lines, sentences in
Latin and Chinese punctuation, words, characters). kb then checks every chunk with the exact counter and
cuts again where token counts did not add up, so the bound is a guarantee, not an estimate. Chunks are
contiguous slices of the text: nothing but whitespace-only stretches is ever dropped, and each chunk
records its character offsets.

With `headings` on, every heading also gets an entry of its own: the heading alone is embedded and stands
for the chunk its section starts in. Embedded inside a chunk, a heading is a few tokens among hundreds
and a query that names a section barely finds it; with heading entries it does (docs/quality.md).
"""

from __future__ import annotations

import bisect
import re
from collections import deque
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Callable, Iterator

from .errors import ConfigError
from .instructions import Instruction
from .settings import Settings
from .tokens import TokenCounter, resolve_counter

if TYPE_CHECKING:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from .embeddings import Embedder

# A Chunker's defaults are the run's, written once in Settings.
DEFAULT_CHUNK_TOKENS: int = Settings.model_fields["chunk_tokens"].default
DEFAULT_OVERLAP: int = Settings.model_fields["overlap"].default
DEFAULT_HEADINGS: bool = Settings.model_fields["headings"].default

# Regex separators, coarsest first. Each match stays at the end of the piece before it, so
# pieces concatenate back to the exact text.
SEPARATORS = [
    r"\n(?=#{1,6} )",  # before a markdown heading
    r"\n(?=[^\n]+\n(?:={3,}|-{3,}|~{3,}|\^{3,}|\*{3,}|\+{3,}|#{3,}|\"{3,}|'{3,}|`{3,})\n)",  # before an rst title
    r"\n\s*\n",  # paragraphs
    r"\n",  # lines
    r"(?<=[.!?])\s+",  # Latin sentences
    r"(?<=[。！？；])",  # Chinese sentences
    r"(?<=[，、：,;:])",  # clauses
    r"\s+",  # words
    r"",  # characters
]

# Headings: ATX markdown (also what kb makes of HTML's h1-h6) and underlined (setext, reStructuredText)
# titles, one line of at most 300 characters with a letter or digit in it.
_ATX = re.compile(r"^ {0,3}#{1,6}[ \t]+([^\n]{1,300}?)[ \t#]*$", re.M)
_UNDERLINED = re.compile(r"^([^\n]{1,300})\n(?:={3,}|-{3,}|~{3,}|\^{3,}|\*{3,}|\+{3,}|#{3,}|\"{3,}|'{3,}|`{3,})[ \t]*$",
                         re.M)
_WORDY = re.compile(r"[^\W_]")


def find_headings(text: str) -> list[tuple[int, int, str]]:
    """(start, end, heading text) of every heading in `text`, in order; start:end is the heading's own text."""
    found = [(m.start(1), m.end(1), m.group(1)) for m in _ATX.finditer(text)]
    found += [(m.start(1), m.end(1), m.group(1)) for m in _UNDERLINED.finditer(text)
              if not m.group(1).lstrip().startswith(("#", "-", "=", "*", "+", "`"))]
    return sorted((start, end, " ".join(heading.split())) for start, end, heading in found if _WORDY.search(heading))


def sections(text: str, min_chars: int = 1) -> list[tuple[int, int]]:
    """(start, end) spans covering `text`, cut at the start of a heading's line once the span so far holds
    `min_chars` characters and more than a heading: a short section (a title straight above its first
    subheading, a two-line section) joins the one after it, so chunks do not shrink to a few words each. Only a
    run of short sections can move a cut: past the first long one, the cuts are where they were."""
    cuts = [0]
    for start, _, _ in find_headings(text):
        line = text.rfind("\n", 0, start) + 1
        if line > cuts[-1]:
            held = text[cuts[-1] : line]
            if len(held.strip()) < min_chars or _heading_only(text, cuts[-1], line):
                continue  # too little of its own before this heading: one section with it
            cuts.append(line)
    return [(start, end) for start, end in zip(cuts, cuts[1:] + [len(text)]) if start < end]


def _heading_only(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is one heading (ATX or underlined) and blank lines."""
    lines = [line for line in text[start:end].splitlines() if line.strip()]
    return len(lines) == 1 and bool(_ATX.match(lines[0])) or (
        len(lines) == 2 and bool(_UNDERLINED.match("\n".join(lines))))


# How many tokens text[start:end] costs: exactly, or estimated from one encoding of the whole text.
Measure = Callable[[str, int, int], int]


@dataclass(frozen=True)
class Chunk:
    """A slice `text[start:end]` of one document, with its token count under the model's tokenizer.

    A heading entry has `section` set: its text is the heading at `start:end`, and it stands for chunk
    number `section` (the one its section starts in)."""

    index: int
    start: int
    end: int
    text: str
    tokens: int
    section: int | None = None


_SEGMENT_CHARS = 1 << 20


def _segments(text: str, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) spans of about `size` characters covering `text`, cut after a paragraph break, else a
    line break, else a space, in the span's second half; a hard cut only where there is none."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            for separator in ("\n\n", "\n", " "):
                at = text.rfind(separator, start + size // 2, end)
                if at >= 0:
                    end = at + len(separator)
                    break
        yield start, end
        start = end


class Chunker:
    """Splits text into chunks of at most `chunk_tokens` model tokens, neighbours sharing about `overlap`."""

    def __init__(
        self,
        counter: TokenCounter,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        overlap: int = DEFAULT_OVERLAP,
        format_document: Callable[[str], str] = lambda text: text,
        headings: bool = DEFAULT_HEADINGS,
    ) -> None:
        self.counter = counter
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.headings = headings
        self._format = format_document
        # How many tokens joining two texts can save (a word cut in two re-forms one token, or a few).
        self._slack = 16
        # Room for a piece on its own: the overlap prepended later must still fit.
        self._piece_budget = chunk_tokens - overlap
        if self._piece_budget < 9:
            raise ConfigError(f"chunk_tokens={chunk_tokens} leaves no room for text after overlap={overlap}")
        # The same spans are counted in several passes (langchain measures each split twice per level):
        # remember recent answers. Token counting is most of the chunking time.
        self._count = lru_cache(maxsize=4096)(counter.count)
        self._count_raw = lru_cache(maxsize=8192)(counter.count_raw)

    @cached_property
    def _overhead(self) -> int:
        """Tokens every chunk carries besides its text (prefix, special tokens). Counted at the first text,
        not at construction: a pipeline process whose workers do the chunking never loads a tokenizer."""
        overhead = self.counter.count(self._format(""))
        if self._piece_budget - overhead < 8:
            raise ConfigError(
                f"chunk_tokens={self.chunk_tokens} leaves no room for text after overlap={self.overlap} "
                f"and {overhead} tokens of prefix and special tokens"
            )
        return overhead

    @property
    def signature(self) -> str:
        """What a chunk depends on besides the text: stored so a settings change (or a new way of cutting)
        re-chunks. `sections`: every section is cut on its own (see `_split`)."""
        return (f"{self.counter.name}|{self.chunk_tokens}|{self.overlap}" + ("|headings" if self.headings else "")
                + "|sections")

    def count(self, text: str) -> int:
        return self._count(self._format(text))

    def split(self, text: str) -> list[Chunk]:
        """Chunks covering `text`. A huge text (a 50 MB log line, a minified page) is cut into segments of
        about `_SEGMENT_CHARS` at a paragraph, line or space first: the whole-text token encoding and the
        splitter's pieces would otherwise take many times the text's size in memory."""
        if len(text) <= _SEGMENT_CHARS:
            return self._split(text)
        chunks: list[Chunk] = []
        for offset, end in _segments(text, _SEGMENT_CHARS):
            for chunk in self._split(text[offset:end]):
                chunks.append(Chunk(len(chunks), chunk.start + offset, chunk.end + offset, chunk.text, chunk.tokens))
        return chunks

    def heading_entries(self, text: str, chunks: list[Chunk]) -> list[Chunk]:
        """An entry per heading of `text` (split into `chunks`), numbered after the chunks. A heading stands
        for the last chunk starting at or before it: the one that begins at the heading when the splitter
        cut there, as it does where it can."""
        if not self.headings or not chunks:
            return []
        starts = [chunk.start for chunk in chunks]
        entries: list[Chunk] = []
        for start, end, heading in find_headings(text):
            tokens = self.count(heading)
            if tokens > self.chunk_tokens:
                continue  # longer than a chunk (tiny chunks, a very long heading): its chunks carry it alone
            section = max(0, bisect.bisect_right(starts, start) - 1)
            entries.append(Chunk(len(chunks) + len(entries), start, end, heading, tokens, section))
        return entries

    def _split(self, text: str) -> list[Chunk]:
        """Each section (from a heading's line to the next heading's) is cut on its own, so chunk boundaries
        start again at every heading: an edit changes the chunks of its own section and no others, whose
        vectors are then reused. Packing sections together from the top would shift every later boundary."""
        chunks: list[Chunk] = []
        # A section of under about half a chunk of English (two characters a token) joins the next.
        for start, end in sections(text, min_chars=2 * self.chunk_tokens):
            for chunk in self._split_section(text[start:end]):
                chunks.append(Chunk(len(chunks), chunk.start + start, chunk.end + start, chunk.text, chunk.tokens))
        return chunks

    def _split_section(self, text: str) -> list[Chunk]:
        starts = self._token_starts(text)
        pending = deque(self._pieces(text, starts))
        chunks: list[Chunk] = []
        while pending:
            piece_start, end = pending.popleft()
            start = piece_start
            if chunks and self.overlap:
                start = self._overlap_start(text, chunks[-1], start, end)
            body = text[start:end]
            tokens = self.count(body)
            if tokens > self.chunk_tokens:
                # Only after an estimate (exact pieces fit by construction): the piece alone is over the
                # bound, so it is cut again with exact counts.
                pending.extendleft(reversed(self._fit(text, piece_start, end, self._exact)))
                continue
            chunks.append(Chunk(len(chunks), start, end, body, tokens))
        return chunks

    # -- internals ---------------------------------------------------------------------------

    def _token_starts(self, text: str) -> list[int] | None:
        token_starts = getattr(self.counter, "token_starts", None)
        return token_starts(text) if token_starts is not None else None

    def _exact(self, text: str, start: int, end: int) -> int:
        return self.count(text[start:end])

    def _estimator(self, starts: list[int]) -> Callable[[str, int, int], int]:
        """Tokens of text[start:end] from one encoding of the whole text: the tokens starting inside the span.

        Exact but at the span's two ends, where a word cut in two may cost a token or so more on its own.
        """
        def estimate(text: str, start: int, end: int) -> int:
            return bisect.bisect_left(starts, end) - bisect.bisect_left(starts, start) + self._overhead

        return estimate

    def _splitter(self, text: str, starts: list[int] | None) -> RecursiveCharacterTextSplitter:
        """langchain's splitter for one document, measuring pieces in the model's tokens.

        It measures every piece at every level of its recursion: tens of encodings per chunk. Where the
        tokenizer gives offsets, one encoding of the document answers them all; the chunks' exact counts
        settle the estimate's ends.
        """
        if starts is None:
            def length(piece: str) -> int:
                return max(1, self._count_raw(piece)) if piece else 0
        else:
            def length(piece: str) -> int:
                if not piece:
                    return 0
                at = text.find(piece)  # any occurrence of the same text costs the same
                if at < 0:
                    return max(1, self._count_raw(piece))
                return max(1, bisect.bisect_left(starts, at + len(piece)) - bisect.bisect_left(starts, at))

        # Imported here: langchain's import takes a tenth of a second a run can spend loading meanwhile
        # (`prepare.load_chunker_early`), or not at all when it has nothing to read.
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        return RecursiveCharacterTextSplitter(
            separators=SEPARATORS,
            is_separator_regex=True,
            keep_separator="end",
            strip_whitespace=False,
            chunk_size=self._piece_budget - self._overhead,
            chunk_overlap=0,
            # A non-empty piece must cost at least one token: langchain's merge repeats zero-cost pieces.
            length_function=length,
        )

    def _pieces(self, text: str, starts: list[int] | None) -> list[tuple[int, int]]:
        """Non-overlapping (start, end) spans covering the text, each within the piece budget (estimated,
        where the tokenizer gives offsets; exactly otherwise)."""
        measure = self._estimator(starts) if starts is not None else self._exact
        spans: list[tuple[int, int]] = []
        position = 0
        for piece in self._splitter(text, starts).split_text(text):
            # The splitter returns contiguous slices; check rather than trust, as offsets depend on it.
            if text.startswith(piece, position):
                start = position
            else:
                start = text.find(piece, position)
                if start < 0:
                    raise AssertionError("text splitter returned text not found in the document")
            if start > position and text[position:start].strip():
                raise AssertionError("text splitter dropped text")
            position = start + len(piece)
            spans.extend(self._fit(text, start, position, measure))
        if text[position:].strip():
            raise AssertionError("text splitter dropped the end of the text")
        return [(s, e) for s, e in self._merge(text, spans, measure) if text[s:e].strip()]

    def _merge(self, text: str, spans: list[tuple[int, int]], measure: Measure) -> list[tuple[int, int]]:
        """Join neighbours while the count allows: summed piece counts over-estimate, chunks came out small.

        Joining rarely saves more than a few tokens, so a join whose parts' counts add up to far more than
        the budget is not worth counting.
        """
        merged: list[tuple[int, int]] = []
        merged_tokens = 0
        for start, end in spans:
            tokens = measure(text, start, end)
            if merged and merged_tokens + tokens - self._overhead <= self._piece_budget + self._slack:
                joined = measure(text, merged[-1][0], end)
                if joined <= self._piece_budget:
                    merged[-1] = (merged[-1][0], end)
                    merged_tokens = joined
                    continue
            merged.append((start, end))
            merged_tokens = tokens
        return merged

    def _fit(self, text: str, start: int, end: int, measure: Measure) -> list[tuple[int, int]]:
        """Cut [start, end) further wherever the count exceeds the budget (token counts don't add up)."""
        spans = []
        while start < end:
            if measure(text, start, end) <= self._piece_budget:
                spans.append((start, end))
                break
            cut = self._longest_prefix(text, start, end, self._piece_budget, measure)
            spans.append((start, cut))
            start = cut
        return spans

    def _longest_prefix(self, text: str, start: int, end: int, budget: int, measure: Measure) -> int:
        """Largest cut in (start, end) with text[start:cut] within budget; at least one character."""
        low, high = start + 1, end - 1
        best = start + 1
        while low <= high:
            middle = (low + high) // 2
            if measure(text, start, middle) <= budget:
                best, low = middle, middle + 1
            else:
                high = middle - 1
        # Prefer to end at whitespace or punctuation near the cut, if that keeps most of the piece.
        for back in range(best, max(start + 1, best - 40), -1):
            if text[back - 1] in " \n\t。！？，、；：.,;:!?":
                return back
        return best

    def _overlap_start(self, text: str, previous: Chunk, start: int, end: int) -> int:
        """Move `start` back into the previous chunk by up to `overlap` tokens, keeping within the bound."""
        low, high = max(previous.start, start - 8 * self.overlap - 64), start
        tail_start = getattr(self.counter, "tail_start", None)
        if tail_start is not None:
            # One encoding's offsets say where the last `overlap` tokens begin; the tail counted on its
            # own may differ by a token at the cut, so it is checked and nudged forward if need be.
            low = low + tail_start(text[low:start], self.overlap)
            while low < start and self._count_raw(text[low:start]) > self.overlap:
                low += 1
            high = low
        # Smallest position whose tail [pos, start) costs at most `overlap` tokens.
        while low < high:
            middle = (low + high) // 2
            if self._count_raw(text[middle:start]) <= self.overlap:
                high = middle
            else:
                low = middle + 1
        candidate = low
        # Start the overlap on a word or sentence boundary when one is close.
        for forward in range(candidate, min(start, candidate + 40)):
            if forward == 0 or text[forward - 1] in " \n\t。！？，、；：.,;:!?":
                candidate = forward
                break
        # Token counts are not additive: shrink the overlap until the whole chunk fits.
        while candidate < start and self.count(text[candidate:end]) > self.chunk_tokens:
            candidate += max(1, (start - candidate) // 4)
        return min(candidate, start)


@dataclass(frozen=True)
class ChunkerSpec:
    """Everything needed to build a run's chunker, small enough to send to worker processes."""

    tokenizer: str | None
    model: str
    endpoint: str | None
    api_key: str | None
    chunk_tokens: int
    overlap: int
    instruction: Instruction
    headings: bool = DEFAULT_HEADINGS

    @classmethod
    def of(cls, settings: Settings, embedder: Embedder) -> ChunkerSpec:
        """The run's chunking: Settings' bounds, within what the model takes."""
        limit = min(settings.chunk_tokens, embedder.max_tokens or settings.chunk_tokens)
        return cls(
            settings.tokenizer, embedder.model, settings.endpoint[0] if settings.endpoint else None,
            settings.api_key.get_secret_value() if settings.api_key else None,
            limit, min(settings.overlap, limit // 4), embedder.instruction, settings.headings,
        )

    def build(self) -> Chunker:
        counter = resolve_counter(self.tokenizer, self.model, self.endpoint, self.api_key)
        return Chunker(counter, self.chunk_tokens, self.overlap, self.instruction.document, self.headings)
