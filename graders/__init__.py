"""The graders: pytest tests that check exercises/ (or solutions/) by behaviour. See conftest.py."""
