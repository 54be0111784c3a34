"""The method core: protocol, registry, target matching, PeftModel and adapter files."""

from peftlab.core.combination import CombinationConfig, Component
from peftlab.core.files import load_adapter, save_adapter
from peftlab.core.model import PeftModel
from peftlab.core.protocol import AdapterLayer, Capabilities, Method, MethodConfig, ModelHook
from peftlab.core.registry import get_method, make_config, method_names, register

__all__ = [
    "AdapterLayer", "Capabilities", "CombinationConfig", "Component", "Method", "MethodConfig", "ModelHook", "PeftModel",
    "get_method", "load_adapter", "make_config", "method_names", "register", "save_adapter",
]
