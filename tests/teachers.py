"""Deterministic stand-ins for a teacher LLM behind the Ollama test server (test doubles, by design:
no capable model runs on this machine). Each reads the prompt the recipe sent and answers from it."""

import json
import re


def doc_qa_teacher(body: dict) -> str:
    """Questions about the passage's sentences, answered by the sentence itself: grounded by construction."""
    prompt = body["messages"][-1]["content"]
    title = re.search(r'document "([^"]+)"', prompt).group(1)
    passage = prompt.split(":\n\n", 1)[1].split("\n\nWrite ", 1)[0]
    k = int(re.search(r"Write (\d+) different questions", prompt).group(1))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", passage) if len(s.split()) >= 6]
    pairs = []
    for sentence in sentences[:k]:
        topic = " ".join(w.strip(",.;:") for w in sentence.split()[1:6])
        pairs.append({"question": f"In the {title} policy, what applies to {topic}?", "answer": sentence})
    return json.dumps({"pairs": pairs})


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def product_description_teacher(body: dict) -> str:
    """Draft: the attributes as a sentence, then the shop's description. Refine: second person, the draft's
    description after it, padded or cut to the word limits the prompt states. A product named "Mystery..."
    gets a refusal at the refine step (too short: dropped)."""
    prompt = body["messages"][-1]["content"]
    name = re.search(r"^Product: (.+)$", prompt, re.M).group(1)
    facts = re.findall(r"^- ([^:\n]+): (.+)$", prompt, re.M)
    if "Draft description:" not in prompt:
        reference = re.search(r"not its wording\):\n(.*?)\n\nWrite a description", prompt, re.S).group(1)
        return f"The {name} comes with " + ", ".join(f"{c} {v}" for c, v in facts) + ". " + reference
    if name.startswith("Mystery"):
        return "I am sorry, I cannot help with that."
    draft = re.search(r"Draft description:\n(.*?)\n\nRewrite the draft", prompt, re.S).group(1)
    low, high = map(int, re.search(r"between (\d+) and (\d+) words", prompt).groups())
    text = f"You get the {name}. " + " ".join(f"Your {c}: {v}." for c, v in facts) + " " + draft.split(". ", 1)[-1]
    while len(_words(text)) < low:
        text += f" The {name} is made for you."
    return " ".join(text.split()[: high - 5])  # whitespace words >= \w+ words minus a margin for "x-y" splits


DEPARTMENT_KEYWORDS = {"Kitchen": ("pan", "knife", "kettle", "mug"), "Garden": ("hose", "rake", "seed", "planter"),
                       "Office": ("stapler", "lamp", "notebook", "pen")}


def department_teacher(body: dict) -> str:
    """The listed department whose keyword the product text contains; none: "Toys" (outside the list);
    a product called "Gizmo" gets prose instead of JSON."""
    prompt = body["messages"][-1]["content"]
    text = re.search(r"^Product: (.*)$", prompt, re.M).group(1).lower()
    labels = json.loads(re.search(r"^Departments: (.*)$", prompt, re.M).group(1))
    if "gizmo" in text:
        return "I think it belongs in Kitchen."
    for label in labels:
        if any(word in text for word in DEPARTMENT_KEYWORDS.get(label, ())):
            return json.dumps({"label": label})
    return json.dumps({"label": "Toys"})
