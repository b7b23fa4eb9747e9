"""saga-sgl: workflow-atomic scheduling for AI-agent inference, as a fork-free SGLang extension.

Importing this package pulls in no sglang, aiohttp or zmq: hosts import what they need.
"""

__version__ = "0.1.0"
