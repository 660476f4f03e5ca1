"""The composition root: the ``sonae`` command (:mod:`app.cli`), the process runner (:mod:`app.runtime`),
device provisioning (:mod:`app.provisioning`) and the services' generated configuration
(:mod:`app.service_secrets`).

It imports every other package of the project (``api``, the domain packages, ``sonae``); nothing imports
it (``pyproject.toml`` ``[tool.importlinter]``, the top layer).
"""
