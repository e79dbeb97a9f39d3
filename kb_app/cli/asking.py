"""`kb ask`: a question answered from the knowledge base by a chat model, streamed, with its sources."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ingest.settings import load_settings
from kb_app.cli.options import (
    AsJson,
    ChromaDatabase,
    ChromaPath,
    ChromaTenant,
    ChromaUrl,
    Collection,
    Config,
    Endpoint,
    Mode,
    Model,
    Rerank,
    RerankEndpoint,
    RerankModel,
)
from kb_app.cli.output import display, err, out, print_json, snippet

CLOSEST = 3  # passages shown when nothing cleared the floor
SNIPPET = 240  # characters of each source shown


def ask_command(
    question: Annotated[str, typer.Argument(help="A question in any language")],
    chat_endpoint: Annotated[Optional[str], typer.Option(
        help="OpenAI-compatible chat base URL, e.g. http://127.0.0.1:30000/v1 [KB_CHAT_ENDPOINT]")] = None,
    chat_model: Annotated[Optional[str], typer.Option(
        help="Served chat model [KB_CHAT_MODEL; the endpoint's first model]")] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="Passages to answer from", min=1, max=100)] = 6,
    context_tokens: Annotated[Optional[int], typer.Option(
        help="The chat model's budget for passages, question and answer, in its tokens [KB_CONTEXT_TOKENS; 8192]",
        min=256)] = None,
    where: Annotated[Optional[str], typer.Option(help='Chroma metadata filter, e.g. {"file_type": "pdf"}')] = None,
    as_json: AsJson = False,
    collection: Collection = None,
    mode: Mode = None,
    rerank: Rerank = None,
    rerank_endpoint: RerankEndpoint = None,
    rerank_model: RerankModel = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Answer a question from the knowledge base, citing passages as [n]; then list the sources cited.
    The chat API key comes from KB_CHAT_API_KEY (environment or config file), never a flag."""
    from kb_app.answer import Done, Retrieved, ask
    from kb_app.chat import ChatModel
    from kb_app.search import Searcher, parse_where

    settings = load_settings(
        config, collection=collection, endpoint=endpoint, model=model, chroma_path=chroma_path,
        chroma_url=chroma_url, chroma_tenant=chroma_tenant, chroma_database=chroma_database, search_mode=mode,
        rerank=rerank, rerank_endpoint=rerank_endpoint, rerank_model=rerank_model, chat_endpoint=chat_endpoint,
        chat_model=chat_model, context_tokens=context_tokens,
    )
    chat = ChatModel.from_settings(settings)
    events = ask(question, Searcher(settings), chat, settings, k=k, where=parse_where(where))
    answer = None
    for event in events:
        if isinstance(event, Retrieved):
            if not as_json and event.retrieval.dropped:
                err.print(f"[dim]{event.retrieval.dropped} of {k} passages left out to fit --context-tokens "
                          f"{settings.context_tokens}[/]")
        elif isinstance(event, Done):
            answer = event.answer
        elif not as_json:
            sys.stdout.write(event.text)
            sys.stdout.flush()
    assert answer is not None  # `ask` always ends with Done
    if as_json:
        print_json(answer.to_dict())
    else:
        sys.stdout.write("\n")
        _sources(answer)
    if answer.error:
        err.print(f"[bold red]error:[/] {escape(answer.error)}")
        raise typer.Exit(2)


def _sources(answer) -> None:  # noqa: ANN001 - kb_app.answer.Answer, imported lazily
    """The cited passages in number order; the closest ones when nothing was found; every passage sent when the
    answer broke off; then the invented citations, the model and the cost."""
    if not answer.found:
        floor = f" is under the floor {answer.floor:.2f}" if answer.floor is not None else ""
        best = f"the best passage's score {answer.best_score:.3f}{floor}" if answer.best_score is not None else \
            "no passage matched"
        err.print(f"[dim]{best}; the chat model was not asked. Closest passages:[/]")
        for n, result in enumerate(answer.passages[:CLOSEST], start=1):
            _source(n, result.source, result.location, result.heading, result.text)
        return
    if answer.error:  # the answer broke off: every passage it was given, cited or not
        out.print("\n[bold]Passages sent to the chat model[/]")
        for n, result in enumerate(answer.passages, start=1):
            _source(n, result.source, result.location, result.heading, result.text)
    elif answer.citations:
        out.print("\n[bold]Sources[/]")
        for c in answer.citations:
            _source(c.n, c.source, c.location, c.heading, c.text)
    else:
        err.print("[yellow]warning:[/] the answer cites no passage: check it against the sources before relying on it")
    if answer.invented:
        made_up = ", ".join(f"[{n}]" for n in answer.invented)
        err.print(f"[yellow]warning:[/] the answer cites {escape(made_up)}, which the model made up: there were "
                  f"only {len(answer.passages)} passages (shown as {escape('[n?]')})")
    if answer.finish_reason == "length":
        err.print("[yellow]warning:[/] the answer is cut short: it reached its token limit (KB_ANSWER_TOKENS) or "
                  "the end of the chat model's context (is --context-tokens above the server's context length?)")
    usage = answer.usage or {}
    tokens = f"; {usage['prompt_tokens']} prompt + {usage['completion_tokens']} answer tokens" if usage else ""
    latency = answer.latency_ms
    first = f", first token {latency['first_token']:.0f} ms" if latency.get("first_token") is not None else ""
    err.print(f"[dim]{escape(answer.model or '')}: {latency['total']:.0f} ms (search {latency['search']:.0f} ms"
              f"{first}){tokens}[/]")


def _source(n: int, source: str, location: str, heading: str | None, text: str) -> None:
    where = display(source) + (f", {location}" if location else "")
    under = f" — {heading}" if heading else ""
    out.print(f"[bold][{n}][/] [green]{escape(where)}[/]{escape(under)}", highlight=False)
    out.print(f"    {escape(snippet(text, SNIPPET))}", highlight=False)
