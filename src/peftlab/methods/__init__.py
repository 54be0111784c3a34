"""Built-in methods; importing this package registers each of them."""

from peftlab.methods import full, lora, prefix, prompt  # noqa: F401  (registration on import)
