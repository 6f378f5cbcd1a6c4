"""Local servers standing in for SaaS APIs the tests cannot reach, each written from its vendor's documentation."""
