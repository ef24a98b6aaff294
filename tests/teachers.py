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
