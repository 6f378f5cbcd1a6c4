"""Local servers standing in for SaaS APIs the tests cannot reach.

Each is written from its vendor's documentation, not from the client it tests.
"""
