"""grounded eval: measure retrieval and answers on BEIR-format data, the way the service runs."""
