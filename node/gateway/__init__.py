"""The OpenAI-compatible LLM gateway: agents call models through the node, which meters every call."""

from node.gateway.proxy import Gateway

__all__ = ["Gateway"]
