"""Names that become file or folder names (torch-free, so configs can check them on creation)."""

import re

# A name that stays inside its folder: word characters and '-', never '.', '/', '\\' or ':'.
PLAIN_NAME = re.compile(r"\w[\w-]*")
