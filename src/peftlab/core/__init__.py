"""The method core: configs, declarations and the registry (torch-free), target matching,
the method protocol, PeftModel and adapter files.

Names load on first use (PEP 562), so the torch-free half (`core.config`, `core.declaration`,
`core.registry`, `core.architectures`, `core.shapes`) imports without torch.
"""

from peftlab.lazy import lazy_exports

_EXPORTS = {
    "AdapterLayer": "peftlab.core.protocol",
    "Method": "peftlab.core.protocol",
    "ModelHook": "peftlab.core.protocol",
    "MethodConfig": "peftlab.core.config",
    "Capabilities": "peftlab.core.declaration",
    "Literature": "peftlab.core.declaration",
    "MethodDeclaration": "peftlab.core.declaration",
    "CombinationConfig": "peftlab.core.combination_config",
    "Component": "peftlab.core.combination_config",
    "make_config": "peftlab.core.combination_config",
    "PeftModel": "peftlab.core.model",
    "load_adapter": "peftlab.core.adapter_io",
    "save_adapter": "peftlab.core.adapter_io",
    "read_config": "peftlab.core.adapter_io",
    "get_method": "peftlab.core.registry",
    "method_names": "peftlab.core.registry",
    "register": "peftlab.core.registry",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
