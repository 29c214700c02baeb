"""grounded service: hybrid retrieval, answers, REST API and CLI."""
