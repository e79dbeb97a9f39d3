"""What `kb ask` adds to search: the answer floor from eval data, time before the first token, passages that fit.

    python -m bench.ask floor   [--work DIR] [--sets sample,handbook,guide] [--handbook-sections N]
                                [--endpoint URL --model NAME --tokenizer e5] [--json]
    python -m bench.ask latency [--work DIR] [--rounds 20] [-k 6]
    python -m bench.ask budget  [--work DIR] [--corpus handbook|guide] [-k 50] [--contexts 4096,8192,16384]
                                [--answer-tokens 1024] [--questions 100]

`floor` asks each question and keeps the best passage's dense (cosine) score, the score `kb_app.answer.retrieve`
holds against the floor. On-topic: the sample questions (tests/data/questions.md) against the sample corpus,
and the judged queries of the Debian handbook sets (`python -m bench.evalsets`: Chinese, Japanese, German and
English queries against the English book) and of the installation guide (Chinese, Japanese and German pages'
titles and first paragraphs against the English pages). Off-topic: each collection's questions asked of the
others, and GENERAL, questions none of them answers. It prints both distributions and the floor that keeps 99%
of the on-topic questions whose best passage is a judged-relevant one (a false "not found" costs more than a
chat call spent on an off-topic question), with the share of each side on the wrong side of it.

`latency` times `retrieve` (search, floor, budget, prompt) beside plain `Searcher.search` in the same rounds,
on the sample corpus, dense and hybrid, warm. `budget` counts how many of k retrieved passages fit a context
budget, on the handbook's or the installation guide's English collection (256-token chunks), asked by the first
of its Chinese queries, in Qwen3's tokens.

Collections are built once under --work (default ~/.cache/kb/bench-ask, a store per embedding model) and reused.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ingest.pipeline import ingest
from ingest.settings import Settings
from kb_app.answer import chat_tokens, passage_block, retrieve
from kb_app.evaluate import EvalSet, load_beir, parallel_set, percentile, write_corpus
from kb_app.search import Searcher

ROOT = Path(__file__).resolve().parent.parent
WORK = Path.home() / ".cache" / "kb" / "bench-ask"
EVAL_SETS = Path.home() / ".cache" / "kb" / "eval-sets"
GUIDE = Path.home() / ".cache" / "kb" / "bench" / "packages" / "installation-guide-amd64" / "usr" / "share" / "doc" \
    / "installation-guide-amd64"
HANDBOOK_SETS = ("handbook-zh-en", "handbook-ja-en", "handbook-de-en", "handbook-en-en")  # all ask the English book
GUIDE_LANGUAGES = ("zh_CN", "ja", "de")  # asking the English pages
KEEP = 0.99  # share of on-topic questions the floor must let through
DEPTH = 6  # passages asked for, as `kb ask` does by default
CHAT_MODEL = "Qwen/Qwen3-8B"  # any Qwen name: chat_tokens counts exactly with Qwen3's tokenizer

# Questions none of the collections answers (not Debian or Linux, nor the sample corpus's topics: solar power,
# coffee, volcanoes, sourdough, bees, the Great Wall, pandas, green tea), some near them on purpose.
GENERAL = [
    "What is the capital of Peru?", "How many players are on a rugby union team?",
    "Who won the FIFA World Cup in 2014?", "How long should I boil an egg for a soft yolk?",
    "What is the longest river in Africa?", "How do I make a pivot table in Microsoft Excel?",
    "What year did the Berlin Wall fall?", "How do you calculate the area of a circle?",
    "Which planet has the most moons?", "What is the offside rule in football?",
    "How do I reset my iPhone to factory settings?", "What are the main causes of inflation?",
    "How do I make a classic French omelette?", "Who painted the Mona Lisa?",
    "What is the difference between a crocodile and an alligator?", "How do I change a flat tyre on a bicycle?",
    "What is the tallest mountain in South America?", "How do I undo a change in Adobe Photoshop?",
    "When were the first modern Olympic Games held?", "What is photosynthesis in simple terms?",
    "秘鲁的首都是哪里？", "一支篮球队在场上有几名球员？", "红烧肉怎么做才好吃？",
    "长江全长多少公里？", "2008年夏季奥运会在哪个城市举办？", "怎样在微信里撤回一条消息？",
    "唐朝的开国皇帝是谁？", "如何用Photoshop去掉照片的背景？", "饺子皮怎么擀才又薄又圆？",
    "世界上最大的沙漠是哪一个？", "乒乓球比赛一局打到几分？", "怎样计算房贷的月供？",
    "月亮为什么会有阴晴圆缺？", "感冒了应该吃什么水果？", "如何用Excel制作数据透视表？",
    "珠穆朗玛峰有多高？", "京剧有哪些主要的角色行当？", "怎样养好一盆多肉植物？",
    "马拉松比赛的全程是多少公里？", "人体一共有多少块骨头？",
]


@dataclass
class Probe:
    """One question asked of one collection: its best passage's dense score and whether that passage is judged
    relevant (None when the question has no judgement there: every off-topic one)."""

    group: str  # e.g. "on: handbook-zh-en", "off: general -> handbook"
    topic: str  # "on" or "off"
    query: str
    score: float | None
    relevant: bool | None
    top: str | None


# -- the collections -------------------------------------------------------------------------


def base_settings(work: Path, endpoint: str | None = None, model: str | None = None,
                  tokenizer: str | None = None) -> Settings:
    """The bench's store for one embedding model (the embedded default when no endpoint is given)."""
    slug = re.sub(r"[^\w.-]+", "_", model or "embedded")
    given = {"endpoint": [endpoint] if endpoint else None, "model": model, "tokenizer": tokenizer}
    extra = {k: v for k, v in given.items() if v}
    return Settings(chroma_path=str(work / f"chroma-{slug}"), **extra)


def build(paths: Sequence[Path], settings: Settings) -> Settings:
    """Ingest `paths` into `settings.collection` (unchanged files are skipped on a re-run)."""
    report = ingest(list(paths), settings, prune=True)
    if not report.ok:
        raise SystemExit(f"ingest into {settings.collection} failed: {report.of('failed')[0].reason}")
    return settings


def sample_questions(path: Path = ROOT / "tests" / "data" / "questions.md") -> list[tuple[str, str]]:
    """The sample corpus's questions and the file that answers each (relative to the checkout)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("data/"):
            rows.append((cells[0], cells[2].partition(" (page ")[0]))
    return rows


def sample_set(data: Path = ROOT / "data") -> EvalSet:
    """The sample questions as a set judged by file (sources are absolute paths)."""
    rows = sample_questions()
    files = {str(p.resolve()): str(p.resolve().relative_to(data.resolve().parent))
             for p in data.rglob("*") if p.is_file() and "chroma" not in p.parts}
    return EvalSet("sample", {f: ("", "") for f in files.values()}, {f"q{i}": q for i, (q, _) in enumerate(rows)},
                   {f"q{i}": {f: 1} for i, (_, f) in enumerate(rows)}, data, files)


def handbook_sets(sections: int = 0) -> tuple[list[EvalSet], EvalSet]:
    """The handbook's sets that ask the English book, and a set holding its corpus (its first `sections`
    sections only, with the queries judged against them, when `sections` is set)."""
    sets = [load_beir(EVAL_SETS / name) for name in HANDBOOK_SETS if (EVAL_SETS / name).is_dir()]
    if not sets:
        raise SystemExit(f"no handbook sets under {EVAL_SETS}: run python -m bench.evalsets first")
    if sections:
        keep = set(list(sets[0].corpus)[:sections])
        for s in sets:
            s.corpus = {d: v for d, v in s.corpus.items() if d in keep}
            s.qrels = {q: r for q, r in s.qrels.items() if set(r) & keep}
            s.queries = {q: s.queries[q] for q in s.qrels}
    return sets, sets[0]


def guide_sets() -> list[EvalSet]:
    """The installation guide's pages in other languages asking for the English ones (its icons left out)."""
    if not (GUIDE / "en").is_dir():
        raise SystemExit(f"no installation guide under {GUIDE}: run python -m bench.evalsets first")
    return [parallel_set(GUIDE / lang, GUIDE / "en", exclude=["*.png"]) for lang in GUIDE_LANGUAGES]


# -- the floor -------------------------------------------------------------------------------


def best_passages(searcher: Searcher, queries: Sequence[str], k: int = DEPTH) -> list[tuple[float | None, str | None]]:
    """Each query's best dense score among its k passages (what the floor is held against), and the top source."""
    out = []
    for response in searcher.search_many(list(queries), k=k, mode="dense", rerank=False):
        dense = [r.dense_score for r in response.results if r.dense_score is not None]
        out.append((max(dense) if dense else None, response.results[0].source if response.results else None))
    return out


def probe(searcher: Searcher, group: str, evalset: EvalSet, sources: dict[str, str] | None) -> list[Probe]:
    """Ask a set's queries of `searcher`'s collection; `sources` (file -> document id) judges them, None: off-topic."""
    ids = list(evalset.queries)
    found = best_passages(searcher, [evalset.queries[q] for q in ids])
    probes = []
    for query_id, (score, top) in zip(ids, found):
        relevant = None if sources is None else sources.get(top or "") in evalset.qrels[query_id]
        probes.append(Probe(group, "off" if sources is None else "on", evalset.queries[query_id], score, relevant, top))
    return probes


def general_set() -> EvalSet:
    """GENERAL as a set without judgements: asked of every collection, off-topic for all."""
    return EvalSet("general", {}, {f"g{i}": q for i, q in enumerate(GENERAL)}, {})


def collections(base: Settings, work: Path, sets: Sequence[str],
                sections: int = 0) -> dict[str, tuple[Settings, list[EvalSet], dict[str, str]]]:
    """Each collection wanted: its settings, the sets judged against it, and its file -> document id map."""
    out: dict[str, tuple[Settings, list[EvalSet], dict[str, str]]] = {}
    if "sample" in sets:
        sample = sample_set()
        out["sample"] = (build([ROOT / "data"], base.model_copy(update={"collection": "ask-sample"})), [sample],
                         sample.files)
    if "handbook" in sets:
        asked, corpus = handbook_sets(sections)
        name = "ask-handbook-en" + (f"-{sections}" if sections else "")
        files = write_corpus(corpus, work / name / "corpus")
        out["handbook"] = (build([work / name / "corpus"], base.model_copy(update={"collection": name})), asked, files)
    if "guide" in sets:
        asked = guide_sets()
        settings = base.model_copy(update={"collection": "ask-guide-en", "exclude": ["*.png"]})
        out["guide"] = (build([GUIDE / "en"], settings), asked, asked[0].files)
    return out


# What each collection is about: a collection's questions are off-topic only for collections of another topic (the
# handbook and the installation guide both document Debian, and answer many of each other's questions).
TOPICS = {"sample": "sample", "handbook": "debian", "guide": "debian"}


def measure_floor(built: dict[str, tuple[Settings, list[EvalSet], dict[str, str]]]) -> list[Probe]:
    """Every set on its own collection (on-topic), and on every collection of another topic, with the general
    questions (off-topic)."""
    probes: list[Probe] = []
    for name, (settings, asked, files) in built.items():
        searcher = Searcher(settings)
        for evalset in asked:
            probes += probe(searcher, f"on: {evalset.name}", evalset, files)
        for other, (_, foreign, _) in built.items():
            if TOPICS[other] != TOPICS[name]:
                for evalset in foreign:
                    probes += probe(searcher, f"off: {evalset.name} -> {name}", evalset, None)
        probes += probe(searcher, f"off: general -> {name}", general_set(), None)
    return probes


def distribution(scores: Sequence[float]) -> dict[str, float]:
    """min, 1st/5th/50th/95th/99th percentiles and max of the scores (nearest rank)."""
    ordered = sorted(scores)
    if not ordered:
        return {"n": 0}
    points = {"min": ordered[0]} | {f"p{q}": percentile(ordered, q) for q in (1, 5, 50, 95, 99)}
    return {"n": len(ordered)} | {k: round(v, 4) for k, v in (points | {"max": ordered[-1]}).items()}


def choose_floor(on_topic: Sequence[float], keep: float = KEEP) -> float:
    """The highest two-decimal floor that lets through at least `keep` of the on-topic scores."""
    ordered = sorted(on_topic)
    allowed_below = math.floor(round((1 - keep) * len(ordered), 6))  # how many may fall under the floor
    return math.floor(round(ordered[allowed_below] * 100, 6)) / 100


def wrong_side(probes: Sequence[Probe], floor: float) -> dict[str, float]:
    """The share of on-topic (judged-relevant top passage) questions refused, and of off-topic ones let through."""
    on = [p.score or 0.0 for p in probes if p.topic == "on" and p.relevant]
    off = [p.score or 0.0 for p in probes if p.topic == "off"]
    return {"on_refused": round(sum(s < floor for s in on) / max(1, len(on)), 4),
            "off_answered": round(sum(s >= floor for s in off) / max(1, len(off)), 4)}


def tradeoff(probes: Sequence[Probe], floors: Sequence[float]) -> list[dict[str, float]]:
    """At each floor: the share of on-topic questions refused (judged-relevant top passage; the worst set) and
    of off-topic ones answered (all; the general questions)."""
    on_sets = {p.group for p in probes if p.topic == "on"}
    general = [p for p in probes if p.group.startswith("off: general")]
    rows = []
    for floor in floors:
        worst = max(wrong_side([p for p in probes if p.group == g], floor)["on_refused"] for g in on_sets)
        rows.append({"floor": floor, **wrong_side(probes, floor), "on_refused_worst_set": worst,
                     "general_answered": wrong_side(general, floor)["off_answered"]})
    return rows


def floor_report(probes: Sequence[Probe], model: str) -> dict[str, Any]:
    """Distributions per group and pooled; the floor that keeps `KEEP` of every on-topic set (each set's own
    floor, the lowest of them) beside the pooled one; and who is on the wrong side of it."""
    groups: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(p.group for p in probes):
        mine = [p for p in probes if p.group == group]
        groups[group] = {"all": distribution([p.score or 0.0 for p in mine])}
        if mine[0].topic == "on":
            relevant = [p.score or 0.0 for p in mine if p.relevant]
            groups[group] |= {"relevant_top1": distribution(relevant), "floor": choose_floor(relevant)}
    on = [p.score or 0.0 for p in probes if p.topic == "on" and p.relevant]
    floor = min(g["floor"] for g in groups.values() if "floor" in g)
    return {"model": model, "floor": floor, "pooled_floor": choose_floor(on), "keep": KEEP, "groups": groups,
            "on_relevant": distribution(on),
            "on_all": distribution([p.score or 0.0 for p in probes if p.topic == "on"]),
            "off": distribution([p.score or 0.0 for p in probes if p.topic == "off"]),
            "off_general": distribution([p.score or 0.0 for p in probes if p.group.startswith("off: general")]),
            "wrong_side": wrong_side(probes, floor),
            "tradeoff": tradeoff(probes, sorted({*(round(floor + d / 100, 2) for d in (-2, -1, 0, 1, 2)),
                                                 *(f / 100 for f in range(20, 100, 5))})),
            "on_all_refused": round(sum((p.score or 0.0) < floor for p in probes if p.topic == "on")
                                    / max(1, sum(p.topic == "on" for p in probes)), 4)}


# -- latency and budget ----------------------------------------------------------------------


def latency(searcher: Searcher, settings: Settings, questions: Sequence[str], rounds: int = 20, k: int = DEPTH,
            modes: Sequence[str] = ("dense", "hybrid")) -> dict[str, dict[str, float]]:
    """Per mode: `Searcher.search` alone and `retrieve` (its search, floor, budget and prompt), each question asked
    both ways in every round after one warm-up round; `added` is retrieve's time outside its own search."""
    out: dict[str, dict[str, float]] = {}
    for mode in modes:
        timed: dict[str, list[float]] = {"search": [], "retrieve": [], "added": [], "first": []}
        for round_ in range(rounds + 1):
            for question in questions:
                started = time.perf_counter()
                searcher.search(question, k, mode=mode)
                search_ms = (time.perf_counter() - started) * 1000
                inner: list[float] = []
                retrieval = retrieve(question, _timed(searcher, mode, inner), searcher.spec.model, settings, k=k,
                                     chat_model=CHAT_MODEL)
                if round_:  # the first round warms up
                    timed["search"].append(search_ms)
                    timed["retrieve"].append(retrieval.search_ms)
                    timed["added"].append(retrieval.search_ms - inner[0])
                elif not timed["first"]:  # the process's first: loads Qwen3's tokenizer and CLD2's names
                    timed["first"].append(retrieval.search_ms - inner[0])
        first = timed.pop("first")
        out[mode] = {f"{name}_{q}": round(percentile(sorted(v), q), 2) for name, v in timed.items() for q in (50, 95)}
        out[mode] |= {"ratio_p50": round(out[mode]["retrieve_50"] / out[mode]["search_50"], 3),
                      "first_added": round(first[0], 1), "samples": len(timed["search"])}
    return out


def _timed(searcher: Searcher, mode: str, into: list[float]) -> Callable[[str, int], Any]:
    def search(query: str, k: int) -> Any:  # noqa: ANN401 - a SearchResponse
        started = time.perf_counter()
        response = searcher.search(query, k, mode=mode)
        into.append((time.perf_counter() - started) * 1000)
        return response
    return search


def budget(searcher: Searcher, settings: Settings, questions: Sequence[str], k: int = 50,
           contexts: Sequence[int] = (4096, 8192, 16384), answer_tokens: int = 1024) -> dict[str, Any]:
    """How many of k passages fit each context budget with `answer_tokens` kept for the answer, and the
    passages' size in Qwen3's tokens (as the prompt holds them, and their text alone)."""
    fits: dict[int, list[int]] = {c: [] for c in contexts}
    prompt: dict[int, list[int]] = {c: [] for c in contexts}
    block_tokens, text_tokens, found = [], [], []
    for question in questions:
        response = searcher.search(question, k, mode="dense")
        found.append(len(response.results))
        for n, result in enumerate(response.results, start=1):
            block_tokens.append(chat_tokens(passage_block(n, result) + "\n\n", CHAT_MODEL))
            text_tokens.append(chat_tokens(result.text, CHAT_MODEL))
        for context in contexts:
            wide = settings.model_copy(update={"context_tokens": context, "answer_floor": -1.0})
            retrieval = retrieve(question, lambda *_, found=response: found, searcher.spec.model, wide, k=k,
                                 chat_model=CHAT_MODEL, answer_tokens=answer_tokens)
            fits[context].append(len(retrieval.passages))
            prompt[context].append(retrieval.prompt_tokens)
    return {"questions": len(questions), "k": k, "retrieved_mean": round(statistics.mean(found), 1),
            "answer_tokens": answer_tokens, "chunk_tokens": searcher.spec.chunk_tokens,
            "passage_tokens_mean": round(statistics.mean(block_tokens), 1),
            "passage_text_tokens_mean": round(statistics.mean(text_tokens), 1),
            "fits": {c: {"mean": round(statistics.mean(v), 1), "min": min(v), "max": max(v),
                         "prompt_tokens_mean": round(statistics.mean(prompt[c]))} for c, v in fits.items()}}


# -- the command -----------------------------------------------------------------------------


def _print_floor(report: dict[str, Any]) -> None:
    print(f"model {report['model']}: floor {report['floor']:.2f} (keeps >= {report['keep']:.0%} of each on-topic "
          f"set's questions whose best passage is judged relevant; pooled: {report['pooled_floor']:.2f})")
    print(f"  on-topic refused {report['wrong_side']['on_refused']:.2%} (all on-topic queries: "
          f"{report['on_all_refused']:.2%}); off-topic answered {report['wrong_side']['off_answered']:.2%}")
    print("\n| group | n | min | p1 | p5 | p50 | p95 | p99 | max |\n|" + " --- |" * 9)
    rows = [(g, d.get("relevant_top1", d["all"])) for g, d in report["groups"].items()]
    alls = {g: d["all"]["n"] for g, d in report["groups"].items()} | {"ON-TOPIC, all": report["on_all"]["n"]}
    rows += [("ON-TOPIC, judged-relevant top passage", report["on_relevant"]), ("ON-TOPIC, all", report["on_all"]),
             ("OFF-TOPIC, all", report["off"]), ("OFF-TOPIC, general questions", report["off_general"])]
    for group, d in rows:
        cells = " | ".join(f"{d[c]:.3f}" for c in ("min", "p1", "p5", "p50", "p95", "p99", "max"))
        print(f"| {group} | {d['n']}{'' if alls.get(group, d['n']) == d['n'] else f' of {alls[group]}'} | {cells} |")
    print("\n| floor | on-topic refused | worst set refused | off-topic answered | general questions answered |"
          "\n|" + " --- |" * 5)
    for row in report["tradeoff"]:
        print(f"| {row['floor']:.2f} | {row['on_refused']:.2%} | {row['on_refused_worst_set']:.2%} | "
              f"{row['off_answered']:.2%} | {row['general_answered']:.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("floor", "latency", "budget"))
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--sets", default="sample,handbook,guide", help="floor: collections to build and ask")
    parser.add_argument("--handbook-sections", type=int, default=0, help="the handbook's first N sections (0: all)")
    parser.add_argument("--endpoint", help="an embedding server (default: kb's embedded model)")
    parser.add_argument("--model")
    parser.add_argument("--tokenizer")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("-k", type=int)
    parser.add_argument("--contexts", default="4096,8192,16384")
    parser.add_argument("--answer-tokens", type=int, default=1024)
    parser.add_argument("--corpus", choices=("handbook", "guide"), default="handbook", help="budget: the collection")
    parser.add_argument("--questions", type=int, default=100, help="budget: queries asked")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = base_settings(args.work, args.endpoint, args.model, args.tokenizer)
    if args.what == "floor":
        built = collections(base, args.work, args.sets.split(","), args.handbook_sections)
        probes = measure_floor(built)
        report = floor_report(probes, Searcher(next(iter(built.values()))[0]).spec.model)
        (args.work / f"floor-{Path(base.chroma_path).name}.json").write_text(
            json.dumps(report | {"probes": [asdict(p) for p in probes]}, ensure_ascii=False, indent=1))
        print(json.dumps(report, ensure_ascii=False, indent=1)) if args.json else _print_floor(report)
        return
    if args.what == "latency":
        settings = collections(base, args.work, ["sample"])["sample"][0]
        result: dict[str, Any] = latency(Searcher(settings), settings, [q for q, _ in sample_questions()],
                                         args.rounds, args.k or DEPTH)
    else:
        settings, asked, _ = collections(base, args.work, [args.corpus], args.handbook_sections)[args.corpus]
        questions = list(asked[0].queries.values())[: args.questions]
        result = budget(Searcher(settings), settings, questions, args.k or 50,
                        [int(c) for c in args.contexts.split(",")], args.answer_tokens)
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
