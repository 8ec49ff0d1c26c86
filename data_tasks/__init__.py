"""seqio Task/Mixture registrations (registration only; the logic lives in gopher_jax.data).

Importing this package registers nothing that needs a runtime value: the embedded tasks need a
vocabulary path, so call `data_tasks.embedded.register_embedded_tasks(vocab_path)`.
"""
from data_tasks import embedded  # noqa: F401
