"""The reference answers to exercises/, module for module and name for name. Try first."""
