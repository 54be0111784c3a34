"""Built-in methods; importing this package registers each of them."""

from peftlab.methods import adapters, full, ia3, lora, prefix, prompt, qlora  # noqa: F401  (registration on import)
