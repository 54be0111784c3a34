"""Built-in methods: one package each (a torch-free `config.py` declaration beside its modules),
and one line here per method, in the order they are listed. The registry
(`peftlab.core.registry`) reads `DECLARATIONS`; nothing else names a method.
"""

from importlib import import_module

BUILTIN = (
    "full",
    "lora",
    "qlora",
    "dora",
    "loraplus",
    "pissa",
    "olora",
    "ia3",
    "adapters",
    "prefix",
    "prompt",
)

DECLARATIONS = tuple(import_module(f"{__name__}.{name}").DECLARATION for name in BUILTIN)
