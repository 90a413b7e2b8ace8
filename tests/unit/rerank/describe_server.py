"""The loopback chat-completions server of `chat_server`, also answering product-description requests.

A description request (``response_format`` named ``product_description``) is answered with a JSON description
built from the product text in the prompt: "A studio photo of <title>, with a zebrastripe pattern. ...", so tests can
find the generated words; ``garbage`` products (their text holds "garbage") get a reply that is not JSON.
"""

from __future__ import annotations

import json
import re

from tests.unit.rerank.chat_server import FakeChatServer, Reply, Seen, completion

MARKER = "zebrastripe"
"""A word only generated descriptions hold."""
_PRODUCT = re.compile(r"The product: (.*?)\. (?:Its photo is the image|It has no photo)\.")


def product_text(seen: Seen) -> str:
    """The product text quoted in a description request."""
    found = _PRODUCT.search(seen.text)
    return found.group(1) if found else ""


def description_of(text: str) -> dict[str, object]:
    """The JSON answer the fake model gives about a product with this text."""
    title = text.split(". ", maxsplit=1)[0]
    return {"description": f"A studio photo of {title}, with a {MARKER} pattern. On a plain background.",
            "attributes": {"colour": "white", "material": None, "pattern": MARKER, "style": "casual"}}


class DescribingServer(FakeChatServer):
    """`FakeChatServer` that also writes product descriptions."""

    def default_reply(self, seen: Seen) -> Reply:
        """A description for description requests; the re-rank answers otherwise."""
        form = seen.body.get("response_format") or {}
        if form.get("json_schema", {}).get("name") != "product_description":
            return super().default_reply(seen)
        text = product_text(seen)
        if "garbage" in text:
            return Reply(body=completion("Sure! Here is a description: it is nice"))
        return Reply(body=completion(json.dumps(description_of(text))))
