"""A deterministic teacher for the catalog_recs recipe behind the Ollama test server (a test double: no capable
model runs on this machine). It reads which step is asking from the prompt and answers from the prompt alone.

- describe:   "The NAME is ideal for USE: DESCRIPTION" (USE from the row's `use` attribute).
- paraphrase: the description with its words trimmed and reordered: a real, but solvable, task for the classifier.
- questions:  needs phrased from the USE part, without the product's name.
- recommend:  the catalog line sharing most words with the question (and the runner-up when it shares some),
              a trailing number dropped from the name ("Thermo Flask 500" → "Thermo Flask");
              a question about hiking also gets FAR_PRODUCT, which the catalog does not have and which is about
              something else entirely.
- expand:     the name and the reason, as a short catalog description.
"""

import json
import re

FAR_PRODUCT = "Celestron Equatorial Telescope Mount"
FAR_REASON = (f"The {FAR_PRODUCT} tracks stars and planets smoothly across the night sky for long-exposure "
              "astrophotography with a heavy refractor.")
STOP = {"a", "an", "and", "the", "for", "with", "that", "this", "what", "would", "you", "can", "need", "something",
        "help", "suggest", "recommend", "is", "it", "to", "of", "on", "in", "my", "me", "i", "ideal", "which"}


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP and len(w) > 2}


def _describe(prompt: str) -> str:
    name = re.search(r"^Product: (.+)$", prompt, re.M).group(1)
    description = re.search(r"^Catalog description: (.+)$", prompt, re.M).group(1)
    use = re.search(r"^- use: (.+)$", prompt, re.M).group(1)
    return f"The {name} is ideal for {use}: {description[0].lower()}{description[1:]}"


def _paraphrase(prompt: str) -> str:
    description = prompt.split("Product description:\n", 1)[1].split("\n\nRewrite", 1)[0]
    n = int(re.search(r"Rewrite this description (\d+) different ways", prompt).group(1))
    head, _, tail = description.partition(": ")
    words = re.findall(r"[\w'-]+", description)
    variants = [
        f"{tail[0].upper()}{tail[1:]} Good for {head.split(' is ideal for ', 1)[1]}.",  # clauses swapped
        " ".join(words[len(words) // 2:] + words[: len(words) // 2]),                     # rotated
        " ".join(w for i, w in enumerate(words) if i % 3 != 1),                            # every third word cut
        " ".join(reversed(words[2:])),                                                     # reversed, trimmed
        " ".join(w for i, w in enumerate(words) if i % 4 != 2) + ".",
    ]
    return json.dumps({"variants": variants[:n]})


def _questions(prompt: str) -> str:
    description = prompt.split("Product description:\n", 1)[1].split("\n\nWrite", 1)[0]
    use = re.search(r" is ideal for (.+?): ", description).group(1)
    k = int(re.search(r"Write (\d+) different questions", prompt).group(1))
    questions = [f"I need something for {use}. What would you suggest?",
                 f"Can you recommend anything to help with {use}?",
                 f"What do you have that is good for {use}?"]
    return json.dumps({"questions": questions[:k]})


def _recommend(prompt: str) -> str:
    catalog = prompt.split("Catalog:\n", 1)[1].split("\n\nCustomer: ", 1)[0]
    question = prompt.split("\n\nCustomer: ", 1)[1].split("\n\n", 1)[0]
    k = int(re.search(r"Recommend up to (\d+) products", prompt).group(1))
    lines = [line[2:].split(": ", 1) for line in catalog.splitlines()]
    wanted = _content(question)
    ranked = sorted(lines, key=lambda pair: -len(wanted & _content(pair[1])))
    picks = [ranked[0]] + [pair for pair in ranked[1:2] if len(wanted & _content(pair[1])) >= 1]
    # A name ending in a number is given without it ("Thermo Flask"), as a model might: the classifier maps it back.
    recommendations = [{"product_name": re.sub(r" \d+$", "", name), "reason": f"{line} It fits this need."}
                       for name, line in picks]
    if "hike" in question or "hiking" in question:
        recommendations.append({"product_name": FAR_PRODUCT, "reason": FAR_REASON})
    return json.dumps({"recommendations": recommendations[:k]})


def _expand(prompt: str) -> str:
    name = re.search(r"^Product: (.+)$", prompt, re.M).group(1)
    reason = re.search(r"^Why a shop assistant recommended it: (.+)$", prompt, re.M).group(1)
    return f"{name}. {reason}"


def catalog_recs_teacher(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    if "Catalog description:" in prompt:
        return _describe(prompt)
    if "Rewrite this description" in prompt:
        return _paraphrase(prompt)
    if "different questions a shopper" in prompt:
        return _questions(prompt)
    if prompt.startswith("Catalog:\n"):
        return _recommend(prompt)
    if "Why a shop assistant recommended it:" in prompt:
        return _expand(prompt)
    raise AssertionError(f"catalog_recs_teacher: unknown prompt {prompt[:200]!r}")
