"""Helpers the tests share: data locations, the CLI runner, the scriptable fake LLM, the real
llama.cpp server, LLM pipelines over a small corpus, hostile inputs, PDF builders and server-sent
events from the TestClient.

Import them as ``from support.fake_llm import FakeLLM``; fixtures stay in ``conftest.py``.
"""
