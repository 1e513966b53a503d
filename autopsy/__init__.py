"""AI Autopsy: re-run public AI incidents and investigate them.

The toolkit is incident-agnostic; incidents live in the sibling package ``incidents``.
"""

__version__ = "0.1.0"
