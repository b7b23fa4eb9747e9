"""saga_router: the workflow-atomic multi-node router (HTTP surface, proxy, worker registry, metrics).

Importable as ``saga_router`` (mapped from the ``router/`` directory by pyproject.toml).
"""
