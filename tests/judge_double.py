"""A deterministic judge LLM for tests: a TEST DOUBLE, not a judge.

No capable judge LLM runs on this machine, so tests that exercise RAGAS (ragas 0.4.3, `ragas.metrics.collections`)
or our pairwise-preference judging end to end use this instead: a responder for tests/ollama_server.py that reads
the judge prompt it is sent and answers with valid JSON computed by a simple word-overlap rule, so a test can
predict every score exactly. Its verdicts mean nothing about real answer quality.

    with OllamaTestServer({"judge-double": JudgeDouble()}) as srv:
        client = openai.AsyncOpenAI(base_url=srv.host + "/v1", api_key="ollama")
        llm = ragas.llms.llm_factory("judge-double", client=client, temperature=0.0)
        await Faithfulness(llm=llm).ascore(user_input=..., response=..., retrieved_contexts=[...])

The rule (module-level helpers, so tests can compute expected scores independently):
  content_words(text)      the set of lowercase alphanumeric tokens ([a-z0-9]+) of length >= 3, minus STOPWORDS
  supported(stmt, context) at least SUPPORT_THRESHOLD (60%) of stmt's content words occur in context's
                           (a statement without content words is not supported)
  split_sentences(text)    split after . ! ? followed by whitespace
  overlap_ratio(ans, ref)  |content_words(ans) & content_words(ref)| / |content_words(ref)| (0.0 if ref has none)

What it answers (the prompt is recognised, not guessed; see `_recognise`):
  Faithfulness, statement generation (StatementGeneratorOutput): statements = split_sentences(answer)
  Faithfulness, NLI (NLIStatementOutput): verdict 1 iff supported(statement, context) -> score = supported share
  AnswerRelevancy (AnswerRelevanceOutput): question = the response text itself; noncommittal = 1 iff the response
      contains "i don't know" or "not sure" (case-insensitive) -> score = cos(embed(question), embed(response)),
      or 0 when noncommittal
  ContextPrecision (ContextPrecisionOutput), one call per retrieved chunk: verdict 1 iff supported(answer, chunk),
      where answer is the reference (ContextPrecision) or the response (ContextUtilization)
  ContextRecall (ContextRecallOutput): each sentence of the reference: attributed 1 iff supported(sentence, context)
  Pairwise preference (ours): a user message with the sections
      "[Question]\\n{q}\\n\\n[Reference answer]\\n{ref}\\n\\n[Answer A]\\n{a}\\n\\n[Answer B]\\n{b}" (instructions may
      precede them; Answer B runs to the end of the message) -> {"winner": "A"|"B"|"tie", "reason": ...}: the
      higher overlap_ratio(answer, reference) wins, equal ratios tie

How a prompt is recognised. ragas' BasePrompt.to_string renders
      {instruction}\\nPlease return the output in a JSON format that complies with the following schema as
      specified in JSON Schema:\\n{json.dumps(output schema)}Do not use single quotes ...\\n\\n{examples}\\n
      -----------------------------\\n\\nNow perform the same with the following input\\ninput: {input json}\\nOutput: "
  and ragas' llm_factory sends it as the only user message through instructor in Mode.JSON, which adds
  response_format={"type": "json_object"} and a system message "As a genius expert, ... match the following
  json_schema:\\n\\n{json.dumps(schema, indent=2)}\\n\\nMake sure to return an instance of the JSON, not the schema
  itself". On a parse failure instructor re-asks: it appends the bad assistant reply and a user message "Correct
  your JSON ONLY RESPONSE, based on the following errors: ..." (up to 3 times), so the double always reads the
  FIRST user message that has the ragas input marker, and the schema from instructor's system message (falling back
  to the one embedded in the ragas prompt). The task is the schema's "title" (the pydantic class name), falling
  back to its property names plus the input's keys; the input is JSON-decoded from after "input: ". A prompt it
  cannot recognise raises ValueError (the server answers 500 and records it in srv.errors).

Failure injection, keyed on the text being judged (the input's "answer"/"response"/"statements", or Answers A/B):
  "JUDGE_BREAKS"  reply with prose, not JSON (instructor's parse fails, it re-asks, and gives up after 4 attempts
                  with instructor.core.InstructorRetryException)
  "JUDGE_SLOW"    sleep `slow_s` seconds first (for client-timeout tests); `release()` ends pending sleeps early
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

SUPPORT_THRESHOLD = 0.6
BREAK_MARKER = "JUDGE_BREAKS"
SLOW_MARKER = "JUDGE_SLOW"
NONCOMMITTAL_PHRASES = ("i don't know", "not sure")
_STOPWORDS_TEXT = """
    the and for are was were with that this these those from has have had its into than then there their they them
    what when where which who whom why how also been being can could does did will would should about over under
    your our his her she him you all any each some such only very just more most other not but yes
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
PROSE_REPLY = "I'm sorry, I can't produce a verdict in the requested format for this one."

_INPUT_MARKER = "Now perform the same with the following input\ninput: "
_SCHEMA_MARKERS = ("json_schema:", "as specified in JSON Schema:")  # instructor's system message, ragas' prompt
_PAIRWISE = re.compile(
    r"\[Question\]\n(?P<question>.*?)\n\n\[Reference answer\]\n(?P<reference>.*?)\n\n"
    r"\[Answer A\]\n(?P<a>.*?)\n\n\[Answer B\]\n(?P<b>.*)",
    re.DOTALL,
)
_TITLES = {
    "StatementGeneratorOutput": "statements",
    "NLIStatementOutput": "nli",
    "AnswerRelevanceOutput": "answer_relevance",
    "ContextPrecisionOutput": "context_precision",
    "ContextRecallOutput": "context_recall",
}
_JUDGED_FIELDS = ("answer", "response", "statements")


# ---- the rule --------------------------------------------------------------------------------------------------
def content_words(text: str) -> set[str]:
    """Lowercase alphanumeric tokens of length >= 3 that are not STOPWORDS."""
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3 and w not in STOPWORDS}


def support_ratio(statement: str, context: str) -> float:
    words = content_words(statement)
    return len(words & content_words(context)) / len(words) if words else 0.0


def supported(statement: str, context: str) -> bool:
    """True iff at least SUPPORT_THRESHOLD of the statement's content words occur in the context."""
    return bool(content_words(statement)) and support_ratio(statement, context) >= SUPPORT_THRESHOLD


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def overlap_ratio(answer: str, reference: str) -> float:
    ref = content_words(reference)
    return len(content_words(answer) & ref) / len(ref) if ref else 0.0


def noncommittal(response: str) -> bool:
    text = response.lower().replace("\u2019", "'")
    return any(p in text for p in NONCOMMITTAL_PHRASES)


# ---- prompt parsing --------------------------------------------------------------------------------------------
def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _decode_after(text: str, marker: str) -> Any:
    """The JSON value that starts at the first "{" after `marker` in `text`; None if there is none."""
    i = text.find(marker)
    if i < 0:
        return None
    j = text.find("{", i + len(marker))
    if j < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(text, j)[0]
    except json.JSONDecodeError:
        return None


def _schema(messages: list[dict]) -> dict | None:
    """The requested output schema: instructor's (system message) first, then the one in the ragas prompt."""
    ordered = sorted(messages, key=lambda m: m.get("role") != "system")
    for marker in _SCHEMA_MARKERS:
        for m in ordered:
            found = _decode_after(_text(m.get("content")), marker)
            if isinstance(found, dict) and ("title" in found or "properties" in found):
                return found
    return None


def _task(schema: dict | None, inp: dict) -> str | None:
    if schema is None:
        return None
    if schema.get("title") in _TITLES:
        return _TITLES[schema["title"]]
    props = set(schema.get("properties") or {})
    if props == {"statements"} and "answer" in inp:
        return "statements"
    if props == {"statements"} and {"context", "statements"} <= set(inp):
        return "nli"
    if {"question", "noncommittal"} <= props:
        return "answer_relevance"
    if props == {"reason", "verdict"}:
        return "context_precision"
    if "classifications" in props:
        return "context_recall"
    return None


class JudgeDouble:
    """A responder for OllamaTestServer that answers judge prompts by the module's word-overlap rule.

    `calls` records (task, parsed input) for every request answered, including the prose (JUDGE_BREAKS) replies,
    so tests can count what a metric asked.
    """

    def __init__(self, slow_s: float = 5.0):
        self.slow_s = slow_s
        self.calls: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self._released = threading.Event()

    def release(self) -> None:
        """Wake any JUDGE_SLOW sleeper now (and skip later sleeps), e.g. before stopping the server."""
        self._released.set()

    def __call__(self, body: dict) -> str:
        task, inp = self._recognise([m for m in body.get("messages") or [] if isinstance(m, dict)])
        with self._lock:
            self.calls.append((task, inp))
        judged = " ".join(
            json.dumps(inp[k]) if not isinstance(inp[k], str) else inp[k]
            for k in (*_JUDGED_FIELDS, "a", "b")
            if k in inp
        )
        if SLOW_MARKER in judged:
            self._released.wait(self.slow_s)
        if BREAK_MARKER in judged:
            return PROSE_REPLY
        return json.dumps(getattr(self, f"_{task}")(inp))

    # ---- recognition -----------------------------------------------------------------------------------------
    def _recognise(self, messages: list[dict]) -> tuple[str, dict]:
        for m in messages:
            if m.get("role") != "user":
                continue
            text = _text(m.get("content"))
            if _INPUT_MARKER in text:
                inp = _decode_after(text[text.rfind(_INPUT_MARKER) :], _INPUT_MARKER)
                if not isinstance(inp, dict):
                    raise ValueError("judge double: a ragas prompt whose input is not a JSON object")
                schema = _schema(messages)
                task = _task(schema, inp)
                if task is None:
                    title = (schema or {}).get("title")
                    raise ValueError(f"judge double: unrecognised ragas prompt (schema {title!r}, input {sorted(inp)})")
                return task, inp
            if match := _PAIRWISE.search(text):
                return "pairwise", {k: v.strip() for k, v in match.groupdict().items()}
        raise ValueError("judge double: no ragas prompt and no pairwise prompt in the messages")

    # ---- answers ---------------------------------------------------------------------------------------------
    @staticmethod
    def _statements(inp: dict) -> dict:
        return {"statements": split_sentences(str(inp["answer"]))}

    @staticmethod
    def _nli(inp: dict) -> dict:
        context = str(inp["context"])
        out = []
        for s in inp["statements"]:
            words = content_words(s)
            found = len(words & content_words(context))
            out.append(
                {
                    "statement": s,
                    "reason": f"{found} of {len(words)} content words occur in the context",
                    "verdict": int(supported(s, context)),
                }
            )
        return {"statements": out}

    @staticmethod
    def _answer_relevance(inp: dict) -> dict:
        response = str(inp["response"])
        return {"question": response, "noncommittal": int(noncommittal(response))}

    @staticmethod
    def _context_precision(inp: dict) -> dict:
        ok = supported(str(inp["answer"]), str(inp["context"]))
        ratio = support_ratio(str(inp["answer"]), str(inp["context"]))
        return {"reason": f"{ratio:.2f} of the answer's content words occur in the context", "verdict": int(ok)}

    @staticmethod
    def _context_recall(inp: dict) -> dict:
        context = str(inp["context"])
        return {
            "classifications": [
                {
                    "statement": s,
                    "reason": f"{support_ratio(s, context):.2f} of its content words occur in the context",
                    "attributed": int(supported(s, context)),
                }
                for s in split_sentences(str(inp["answer"]))
            ]
        }

    @staticmethod
    def _pairwise(inp: dict) -> dict:
        ra, rb = overlap_ratio(inp["a"], inp["reference"]), overlap_ratio(inp["b"], inp["reference"])
        winner = "A" if ra > rb else "B" if rb > ra else "tie"
        return {"winner": winner, "reason": f"reference overlap A={ra:.2f} B={rb:.2f}"}
